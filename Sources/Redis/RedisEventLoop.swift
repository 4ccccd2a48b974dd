import SystemCalls
import CHiredis
import CSystemShims
import Glibc
import RPC
import Synchronization

/// The I/O thread of one `RedisClient`: an epoll loop that owns the client's connections (at
/// most `poolSize`, non-blocking sockets, one hiredis protocol reader each) and every decision
/// about them. Callers never touch a connection: they append a job to the inbox (one mutex)
/// and signal an eventfd only when the loop has not been signalled since it last emptied the
/// inbox. The loop takes all jobs at once, writes every command that queued meanwhile to its
/// connection in one `send` (automatic pipelining), reads replies as they come and resumes each
/// caller's continuation from this thread.
///
/// The loop runs on a thread of its own, or, hosted (`HostedPoller`), on the thread of an HTTP
/// event loop that watches its epoll descriptor: then a handler on that loop reaches Redis and is
/// resumed without any thread hop, and a timerfd in the set stands in for the epoll timeout.
/// When the host stops, the loop moves to a thread of its own and goes on.
///
/// Connects are the exception: a short-lived thread runs the blocking connect (TCP or the TLS
/// tunnel, `AUTH`, `SELECT`, all bounded by `connectTimeout`/`commandTimeout`) and hands the
/// descriptor to the loop, so a slow connect never stalls commands on the other connections.
/// Connects are rare (first use, after a failure, never more often than the back-off allows).
final class RedisEventLoop: @unchecked Sendable {
    typealias Waiter = RedisReplyWaiter

    struct Call: Sendable {
        let id: UInt64
        let commands: Commands
        let exclusive: Bool
        let continuation: Waiter
    }

    /// A call's commands: as argument lists, or already in RESP (a hot path that writes its
    /// bytes once, with no array per command or argument).
    enum Commands: Sendable {
        case args([[[UInt8]]])
        case encoded([UInt8], count: Int)

        var count: Int {
            switch self {
            case .args(let a): a.count
            case .encoded(_, let n): n
            }
        }

        func write(to out: inout [UInt8]) {
            switch self {
            case .args(let a): for command in a { RESP.append(command, to: &out) }
            case .encoded(let bytes, _): out.append(contentsOf: bytes)
            }
        }
    }

    enum Job: Sendable {
        case submit(Call)
        case cancel(UInt64)
        case connected(link: Int, fd: Int32)
        case connectFailed(link: Int, RedisError)
        case close(CheckedContinuation<Void, Never>?)
    }

    /// What callers and the loop share (under `inbox`).
    private struct Inbox {
        var jobs: [Job] = []
        /// The eventfd was signalled and the loop has not taken the jobs since.
        var signalled = false
        var started = false
        /// `close()` was called: new calls are refused.
        var closed = false
        /// The thread has finished; nothing will take jobs any more.
        var exited = false
    }

    /// Counts published by the loop after each round (read by `statistics` and tests).
    struct Counts: Sendable, Equatable {
        var created = 0
        var idle = 0
        var waiting = 0
        /// Commands (pipeline members count one each) written so far, and the `send` calls
        /// that carried them.
        var commandsWritten = 0
        var writes = 0
        /// The most commands one `send` carried.
        var largestWrite = 0
        /// Commands outstanding on all connections.
        var outstanding = 0
    }

    let configuration: RedisConfiguration
    let logger: Logger
    private let inbox = Mutex(Inbox())
    private let published = Mutex(Counts())
    private let ids = Atomic<UInt64>(0)
    /// Made with the loop (so callers may signal without a race) and closed with it.
    private let epfd: Int32
    private let wakeFD: Int32
    /// Hosted loops sleep in their host's epoll_wait: this timer wakes them for deadlines.
    private let timerFD: Int32
    /// The thread that runs the loop now (0: none yet), for `RedisClient` to pick the caller's own loop.
    private let ownerID = Atomic<UInt>(0)

    // Everything below is confined to the loop thread.
    private var owner = pthread_t()
    private var links: [Link] = []
    private var waiters = FIFO<Waiting>()
    private var nextLinkID = 0
    private var connectsInFlight = 0
    private var downUntil: ContinuousClock.Instant?
    private var closing = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var counts = Counts()
    private var now = ContinuousClock.now
    private var readBuffer = [UInt8](repeating: 0, count: 64 << 10)
    private var eventFDs = [Int32](repeating: 0, count: 64)
    private var eventMasks = [UInt32](repeating: 0, count: 64)
    /// When the timerfd is due (hosted), nil when disarmed.
    private var timerDue: ContinuousClock.Instant?
    /// The loop has finished (loop-confined mirror of `Inbox.exited`).
    private var finished = false
    /// Spread to another connection only when the best one already has this many outstanding.
    private let spreadAt = 32

    /// A call that found no connection with room: it waits up to `acquireTimeout` for one.
    private struct Waiting {
        let call: Call
        let deadline: ContinuousClock.Instant
    }

    /// One connection (loop-confined).
    private final class Link {
        let id: Int
        var machine: RedisConnectionStateMachine<Waiter>
        var fd: Int32 = -1
        var reader: UnsafeMutablePointer<redisReader>?
        var output: [UInt8] = []
        var sent = 0
        /// Commands in `output` not yet counted as written.
        var unsentCommands = 0
        var watchingWrites = false

        init(id: Int, machine: RedisConnectionStateMachine<Waiter>) {
            self.id = id
            self.machine = machine
        }
    }

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        timerFD = pt_timerfd_create()
    }

    deinit {
        if epfd >= 0 { Glibc.close(epfd) }
        if wakeFD >= 0 { Glibc.close(wakeFD) }
        if timerFD >= 0 { Glibc.close(timerFD) }
    }

    /// The thread running the loop now, 0 when none.
    var thread: UInt { ownerID.load(ordering: .relaxed) }

    /// True when the calling thread is the one running this loop.
    var runsOnCurrentThread: Bool {
        let id = ownerID.load(ordering: .relaxed)
        return id != 0 && id == UInt(pthread_self())
    }

    /// Hands the loop to a host instead of starting its own thread. Nil when it already runs
    /// (its first command came first), is closed, or the descriptors could not be made.
    func hostedPoller() -> (any HostedPoller)? {
        guard epfd >= 0, wakeFD >= 0, timerFD >= 0 else { return nil }
        let taken: Bool = inbox.withLock { box in
            guard !box.started, !box.closed else { return false }
            box.started = true
            return true
        }
        guard taken else { return nil }
        guard pt_epoll_add(epfd, wakeFD, EPOLLIN.rawValue) == 0 else {
            failEverything(RedisError.unavailable("cannot start the Redis I/O loop"))
            return nil
        }
        guard pt_epoll_add(epfd, timerFD, EPOLLIN.rawValue) == 0 else {
            spawn()  // no timer, no hosting: a thread of its own, as if never offered
            return nil
        }
        return HostedRedisLoop(self)
    }

    var counters: Counts { published.withLock { $0 } }

    fileprivate var pollDescriptor: Int32 { epfd }

    // MARK: - Caller side (any thread)

    /// Sends `commands` (already checked non-empty) on one connection, in order, and returns
    /// their replies.
    func run(_ commands: [[[UInt8]]], exclusive: Bool) async throws -> [RedisReply] {
        let id = ids.add(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[RedisReply], any Error>) in
                // The cancellation is checked under the lock the cancel job also takes: either
                // the cancel job comes after this call in the inbox, or this call sees it.
                submit(Call(id: id, commands: .args(commands), exclusive: exclusive, continuation: .task(continuation)), unlessCancelled: true)
            }
        } onCancel: {
            post(.cancel(id))
        }
    }

    /// Sends `commands` like `run`, at once, without waiting: the replies are awaited later
    /// with `RedisPendingReplies.value()` (or never, and dropped).
    func start(_ commands: Commands, exclusive: Bool) -> RedisPendingReplies {
        let id = ids.add(1, ordering: .relaxed).newValue
        let pending = RedisPendingReplies(loop: self, id: id)
        submit(Call(id: id, commands: commands, exclusive: exclusive, continuation: .pending(pending)), unlessCancelled: false)
        return pending
    }

    /// Tells the loop to forget call `id` (its waiter gave up).
    func cancel(call id: UInt64) { post(.cancel(id)) }

    /// Hands `call` to the loop thread (waking it if need be), or fails it at once when the
    /// client is closed (or, with `unlessCancelled`, the calling task is cancelled).
    private func submit(_ call: Call, unlessCancelled: Bool) {
        enum Outcome { case closed, cancelled, queued, wake, start }
        let outcome: Outcome = inbox.withLock { box in
            if box.closed || box.exited { return .closed }
            if unlessCancelled && Task.isCancelled { return .cancelled }
            box.jobs.append(.submit(call))
            if !box.started {
                box.started = true
                box.signalled = true
                return .start
            }
            if box.signalled { return .queued }
            box.signalled = true
            return .wake
        }
        switch outcome {
        case .closed: call.continuation.resume(throwing: RedisError.unavailable("the Redis client is closed"))
        case .cancelled: call.continuation.resume(throwing: CancellationError())
        case .queued: break
        case .wake: signal()
        case .start: start()
        }
    }

    /// Refuses new calls; connections close once their outstanding replies arrived (bounded by
    /// the command timeout). Returns when the loop thread is done.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let running: Bool = inbox.withLock { box in
                box.closed = true
                guard box.started, !box.exited else { return false }
                box.jobs.append(.close(continuation))
                return true
            }
            if running { signal() } else { continuation.resume() }
        }
    }

    /// `close()` without waiting (from `deinit`).
    func requestClose() {
        let running: Bool = inbox.withLock { box in
            box.closed = true
            guard box.started, !box.exited else { return false }
            box.jobs.append(.close(nil))
            return true
        }
        if running { signal() }
    }

    /// Appends a job for a running loop (dropped when the loop is not running: then nothing
    /// it could concern exists).
    private func post(_ job: Job) {
        let wake: Bool = inbox.withLock { box in
            guard box.started, !box.exited else { return false }
            box.jobs.append(job)
            if box.signalled { return false }
            box.signalled = true
            return true
        }
        if wake { signal() }
    }

    private func signal() { Syscalls.signalEventFD(wakeFD) }

    /// Starts the thread (first call only).
    private func start() {
        guard epfd >= 0, wakeFD >= 0, pt_epoll_add(epfd, wakeFD, EPOLLIN.rawValue) == 0 else {
            failEverything(RedisError.unavailable("cannot start the Redis I/O thread"))
            return
        }
        spawn()
    }

    /// Runs the loop on a new thread (at start, or when the host stopped driving it). False when
    /// no thread could be made (the inbox's calls then failed).
    @discardableResult
    private func spawn() -> Bool {
        guard Syscalls.detachedThread({ self.loop() }) else {
            failEverything(RedisError.unavailable("cannot start the Redis I/O thread"))
            return false
        }
        signal()  // the first job may already be in the inbox
        return true
    }

    /// No loop can run: every call waiting in the inbox fails, later ones are refused.
    private func failEverything(_ error: RedisError) {
        let jobs: [Job] = inbox.withLock { box in
            box.exited = true
            defer { box.jobs = [] }
            return box.jobs
        }
        for job in jobs {
            switch job {
            case .submit(let call): call.continuation.resume(throwing: error)
            case .close(let continuation?): continuation.resume()
            default: break
            }
        }
        for continuation in closeWaiters { continuation.resume() }
        closeWaiters = []
    }

    // MARK: - The loop (its own thread)

    /// Debug builds check that connection state is only touched on the loop thread.
    @inline(__always) private func assertOnLoop() {
        assert(pthread_equal(owner, pthread_self()) != 0, "Redis connection state touched off its I/O thread")
    }

    private func loop() {
        ownerID.store(UInt(pthread_self()), ordering: .relaxed)
        owner = pthread_self()
        while !turn(timeoutMs: timeoutMs()) {}
        finish()
    }

    /// One turn of the loop: waits up to `timeoutMs` for readiness, then handles events, jobs,
    /// deadlines and writes. True when the loop is done (closed, nothing left open).
    private func turn(timeoutMs: Int32) -> Bool {
        let n = pt_epoll_wait(epfd, &eventFDs, &eventMasks, Int32(eventFDs.count), timeoutMs)
        now = .now
        for i in 0..<max(0, Int(n)) {
            if eventFDs[i] == wakeFD {
                Syscalls.drainEventFD(wakeFD)
            } else if eventFDs[i] == timerFD {
                Syscalls.drainEventFD(timerFD)  // a timerfd's expiry count reads like an eventfd's
                timerDue = nil
            } else if let link = links.first(where: { $0.fd == eventFDs[i] }) {
                ready(link, events: eventMasks[i])
            }
        }
        let jobs: [Job] = inbox.withLock { box in
            box.signalled = false
            defer { box.jobs.removeAll(keepingCapacity: true) }
            return box.jobs
        }
        for job in jobs { handle(job) }
        expire()
        for link in links where link.fd >= 0 && link.sent < link.output.count { flush(link) }
        publish()
        return closing && links.isEmpty && connectsInFlight == 0
    }

    /// The loop is done: late jobs are answered, `close()` callers resumed.
    private func finish() {
        finished = true
        if timerDue != nil { _ = pt_timerfd_arm(timerFD, -1) }
        timerDue = nil
        let late: [Job] = inbox.withLock { box in
            box.exited = true
            defer { box.jobs = [] }
            return box.jobs
        }
        for case .close(let continuation?) in late { closeWaiters.append(continuation) }
        publish()
        for continuation in closeWaiters { continuation.resume() }
        closeWaiters = []
    }

    // MARK: Hosted (on an event loop's thread)

    /// `HostedPoller.runReady`: one turn without waiting, then the timer set for the next deadline.
    fileprivate func hostedTurn() {
        guard !finished else { return }
        if !runsOnCurrentThread {
            ownerID.store(UInt(pthread_self()), ordering: .relaxed)
            owner = pthread_self()
        }
        if turn(timeoutMs: 0) {
            finish()
            return
        }
        armTimer()
    }

    /// `HostedPoller.hostEnded`: the loop goes on on a thread of its own.
    fileprivate func hostDetached() {
        guard !finished else { return }
        ownerID.store(0, ordering: .relaxed)
        if spawn() { return }
        // No thread to go on with: what was waiting on a connection fails too, nothing hangs.
        finished = true
        let error = RedisError.unavailable("cannot start the Redis I/O thread")
        for waiting in waiters.removeAll() { waiting.call.continuation.resume(throwing: error) }
        for link in links {
            for waiter in link.machine.failed() { waiter.resume(throwing: error) }
            remove(link)
        }
    }

    /// Arms the timerfd for the earliest deadline. A deadline that moved later (a reply reset a
    /// connection's clock) keeps the earlier expiry: the spurious turn re-arms for the new one.
    private func armTimer() {
        guard let due = earliestDeadline() else { return }
        if let armed = timerDue, armed <= due { return }
        let left = due - now
        let ms: Int64 = left <= .zero ? 0 : left.roundedUpMilliseconds
        if pt_timerfd_arm(timerFD, Int(ms)) == 0 { timerDue = due }
    }


    /// The earliest deadline: a reply due, a waiter's acquire timeout; nil: none.
    private func earliestDeadline() -> ContinuousClock.Instant? {
        var earliest = waiters.first?.deadline
        for link in links {
            if let d = link.machine.deadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        }
        return earliest
    }

    /// Milliseconds until the earliest deadline; -1: none.
    private func timeoutMs() -> Int32 {
        guard let earliest = earliestDeadline() else { return -1 }
        let left = earliest - .now
        if left <= .zero { return 0 }
        return Int32(clamping: left.roundedUpMilliseconds)
    }

    private func handle(_ job: Job) {
        assertOnLoop()
        switch job {
        case .submit(let call):
            if closing {
                call.continuation.resume(throwing: RedisError.unavailable("the Redis client is closed"))
            } else if !waiters.isEmpty {
                wait(call)  // first come, first served: nobody overtakes a waiting call
            } else {
                place(call)
            }
        case .cancel(let id):
            cancel(id)
        case .connected(let id, let fd):
            connectsInFlight -= 1
            downUntil = nil
            connected(id, fd: fd)
        case .connectFailed(let id, let error):
            connectsInFlight -= 1
            if case .unavailable = error, configuration.reconnectBackoff > .zero {
                downUntil = now + configuration.reconnectBackoff
            }
            logger.warning("redis_connect_failed", ("error", error.description))
            if let link = links.first(where: { $0.id == id }) {
                for waiter in link.machine.failed() { waiter.resume(throwing: error) }
                remove(link)
            }
            placeWaiters()
        case .close(let continuation):
            if let continuation { closeWaiters.append(continuation) }
            guard !closing else { return }
            closing = true
            let closed = RedisError.unavailable("the Redis client is closed")
            for waiting in waiters.removeAll() { waiting.call.continuation.resume(throwing: closed) }
            for link in links where link.machine.closeRequested() == .closeNow { remove(link) }
        }
    }

    private enum Placement {
        case on(Link)
        case open
        /// A connect failed recently: fail at once.
        case down
        case wait
    }

    private func placement(exclusive: Bool) -> Placement {
        var best: Link?
        for link in links where link.machine.accepts(exclusive: exclusive) {
            if best.map({ link.machine.outstanding < $0.machine.outstanding }) ?? true { best = link }
        }
        let mayOpen = links.count < configuration.poolSize
        let isDown = downUntil.map { now < $0 } ?? false
        if let best {
            if best.machine.outstanding >= spreadAt && mayOpen && !isDown { return .open }
            return .on(best)
        }
        if mayOpen { return isDown ? .down : .open }
        return .wait
    }

    private func place(_ call: Call) {
        switch placement(exclusive: call.exclusive) {
        case .on(let link): enqueue(call, on: link)
        case .open: enqueue(call, on: open())
        case .down: call.continuation.resume(throwing: RedisError.unavailable("Redis is down (a recent connect failed); not retrying yet"))
        case .wait: wait(call)
        }
    }

    /// Queues a call that has no connection yet; the line is bounded like each connection.
    private func wait(_ call: Call) {
        let limit = configuration.maxCommandsPerConnection * configuration.poolSize
        guard waiters.count < limit else {
            call.continuation.resume(throwing: RedisError.timeout("too many Redis commands waiting (\(limit))"))
            return
        }
        waiters.append(Waiting(call: call, deadline: now + configuration.acquireTimeout))
    }

    /// Places waiting calls, oldest first, while there is room.
    private func placeWaiters() {
        while let head = waiters.first, !closing {
            switch placement(exclusive: head.call.exclusive) {
            case .wait: return
            case .on, .open, .down:
                _ = waiters.popFirst()
                place(head.call)
            }
        }
    }

    private func enqueue(_ call: Call, on link: Link) {
        switch link.machine.submit(id: call.id, waiter: call.continuation, expected: call.commands.count,
                                   exclusive: call.exclusive, now: now) {
        case .refuse(let error):
            call.continuation.resume(throwing: error)
        case .write, .hold:
            call.commands.write(to: &link.output)
            link.unsentCommands += call.commands.count
        }
    }

    private func cancel(_ id: UInt64) {
        if let index = waiters.firstIndex(where: { $0.call.id == id }) {
            waiters.remove(at: index).call.continuation.resume(throwing: CancellationError())
            return
        }
        for link in links {
            if let waiter = link.machine.cancel(id: id) {
                waiter.resume(throwing: CancellationError())
                return
            }
        }
    }

    // MARK: Connections

    /// A new connection, connecting on a thread of its own.
    private func open() -> Link {
        nextLinkID += 1
        let link = Link(id: nextLinkID, machine: .init(commandTimeout: configuration.commandTimeout,
                                                       capacity: configuration.maxCommandsPerConnection))
        links.append(link)
        connectsInFlight += 1
        let attempt = ConnectAttempt(loop: self, link: link.id)
        if !Syscalls.detachedThread({ attempt.run() }) {
            attempt.finish(.connectFailed(link: link.id, .unavailable("cannot start a Redis connect thread")))
        }
        return link
    }

    /// Runs the blocking connect off the loop and reports back with a job.
    private final class ConnectAttempt: @unchecked Sendable {
        let loop: RedisEventLoop
        let link: Int
        init(loop: RedisEventLoop, link: Int) {
            self.loop = loop
            self.link = link
        }

        func run() {
            do {
                let connection = try RedisConnection.connect(loop.configuration)
                guard let fd = connection.takeDescriptor() else {
                    finish(.connectFailed(link: link, .unavailable("connection is closed")))
                    return
                }
                finish(.connected(link: link, fd: fd))
            } catch let error as RedisError {
                finish(.connectFailed(link: link, error))
            } catch {
                finish(.connectFailed(link: link, .unavailable("cannot connect to Redis")))
            }
        }

        /// The loop runs until every connect reported back, so the job is never dropped.
        func finish(_ job: Job) { loop.post(job) }
    }

    private func connected(_ id: Int, fd: Int32) {
        guard let link = links.first(where: { $0.id == id }) else {
            Glibc.close(fd)
            return
        }
        switch link.machine.connected(now: now) {
        case .discard:
            Glibc.close(fd)
            remove(link)
        case .start:
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            guard let reader = Hiredis.makeReader(), pt_epoll_add(epfd, fd, EPOLLIN.rawValue) == 0 else {
                Glibc.close(fd)
                drop(link, .unavailable("out of memory in the Redis client"))
                return
            }
            link.fd = fd
            link.reader = reader
        }
    }

    /// Closes the link's descriptor and forgets it.
    private func remove(_ link: Link) {
        assertOnLoop()
        if link.fd >= 0 {
            _ = pt_epoll_del(epfd, link.fd)
            Glibc.close(link.fd)
            link.fd = -1
        }
        if let reader = link.reader { Hiredis.freeReader(reader) }
        link.reader = nil
        links.removeAll { $0 === link }
    }

    /// The connection broke or answered out of protocol: its waiting commands fail, it closes,
    /// and the next call opens a new one.
    private func drop(_ link: Link, _ error: RedisError) {
        let failed = link.machine.failed()
        for waiter in failed { waiter.resume(throwing: error) }
        remove(link)
        logger.info("redis_connection_dropped", ("error", error.description), ("failed_commands", String(failed.count)))
        placeWaiters()
    }

    private func ready(_ link: Link, events: UInt32) {
        if events & EPOLLOUT.rawValue != 0 { flush(link) }
        if link.fd >= 0, events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { read(link) }
    }

    private func read(_ link: Link) {
        assertOnLoop()
        while link.fd >= 0, let reader = link.reader {
            let got = readBuffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try Syscalls.recv(link.fd, into: raw, flags: Int32(MSG_DONTWAIT)) }
            }
            let n: Int
            switch got {
            case .success(.processed(let count)): n = count
            case .success(.wouldBlock): return
            case .success(.eof): n = 0
            case .failure(let e):
                drop(link, .unavailable("Redis I/O failed: \(e.reason)"))
                return
            }
            if n == 0 {
                if link.machine.outstanding == 0 {
                    link.machine.failed().forEach { $0.resume(throwing: RedisError.unavailable("Redis closed the connection")) }
                    remove(link)
                    logger.info("redis_connection_dropped", ("reason", "closed while idle"))
                    placeWaiters()
                } else {
                    drop(link, .unavailable("Redis closed the connection"))
                }
                return
            }
            guard readBuffer.withUnsafeBytes({ Hiredis.feed(reader, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) else {
                drop(link, .unavailable("out of memory in the Redis client"))
                return
            }
            var freed = false
            replies: while true {
                switch Hiredis.nextReply(reader) {
                case .needMore:
                    break replies
                case .failed(let text):
                    drop(link, .protocol("bad reply from Redis: \(text)"))
                    return
                case .reply(let reply):
                    switch link.machine.received(reply, now: now) {
                    case .pending:
                        continue
                    case .complete(let waiter, let replies, let close):
                        waiter?.resume(returning: replies)
                        freed = true
                        if close {
                            remove(link)
                            return
                        }
                    case .unexpected(let waiters):
                        let error = RedisError.protocol("Redis sent a reply nobody asked for")
                        for waiter in waiters { waiter.resume(throwing: error) }
                        remove(link)
                        logger.info("redis_connection_dropped", ("error", error.description))
                        placeWaiters()
                        return
                    }
                }
            }
            if freed { placeWaiters() }
            if n < readBuffer.count { return }
        }
    }

    /// Writes what the connection's output holds; watches for writability when the socket is full.
    private func flush(_ link: Link) {
        assertOnLoop()
        guard link.fd >= 0 else { return }
        while link.sent < link.output.count {
            let sent = link.output.withUnsafeBytes { raw in
                Result { () throws(SystemError) in
                    try Syscalls.send(link.fd, UnsafeRawBufferPointer(rebasing: raw[link.sent...]), flags: Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                }
            }
            switch sent {
            case .success(.processed(let n)):
                link.sent += n
                continue
            case .success(.wouldBlock):
                break
            case .success(.eof), .failure:
                let reason = if case .failure(let e) = sent { e.reason } else { "the connection closed" }
                drop(link, .unavailable("Redis I/O failed: \(reason)"))
                return
            }
            break
        }
        if link.unsentCommands > 0 {
            counts.writes += 1
            counts.commandsWritten += link.unsentCommands
            counts.largestWrite = max(counts.largestWrite, link.unsentCommands)
            link.unsentCommands = 0
        }
        let done = link.sent == link.output.count
        if done {
            link.output.removeAll(keepingCapacity: link.output.capacity <= 1 << 16)
            link.sent = 0
        }
        if done == link.watchingWrites {
            link.watchingWrites = !done
            _ = pt_epoll_mod(epfd, link.fd, EPOLLIN.rawValue | (done ? 0 : EPOLLOUT.rawValue))
        }
    }

    /// Late replies close their connection; calls that waited too long for one fail.
    private func expire() {
        for link in links {
            guard let late = link.machine.tick(now: now) else { continue }
            let error = RedisError.timeout("no answer from Redis within the command timeout")
            for waiter in late { waiter.resume(throwing: error) }
            remove(link)
            logger.info("redis_connection_dropped", ("error", error.description), ("failed_commands", String(late.count)))
        }
        while let head = waiters.first, head.deadline <= now {
            _ = waiters.popFirst()
            head.call.continuation.resume(throwing: RedisError.timeout(
                "no Redis connection free within \(configuration.acquireTimeout) (pool of \(configuration.poolSize))"))
        }
        placeWaiters()
    }

    private func publish() {
        counts.created = links.count
        counts.idle = links.count(where: { $0.machine.state == .ready && $0.machine.outstanding == 0 })
        counts.waiting = waiters.count
        counts.outstanding = links.reduce(0) { $0 + $1.machine.outstanding }
        let snapshot = counts
        published.withLock { $0 = snapshot }
    }
}

/// What an event loop drives (`RedisEventLoop.hostedPoller()`).
private final class HostedRedisLoop: HostedPoller {
    let loop: RedisEventLoop
    init(_ loop: RedisEventLoop) { self.loop = loop }
    var pollDescriptor: Int32 { loop.pollDescriptor }
    func runReady() { loop.hostedTurn() }
    func hostEnded() { loop.hostDetached() }
}

/// RESP2 request encoding: `*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per argument (binary-safe).
enum RESP {
    static func append(_ args: [[UInt8]], to out: inout [UInt8]) {
        appendArrayHeader(args.count, to: &out)
        for arg in args { appendBulk(arg, to: &out) }
    }

    /// `*count\r\n`: a command of `count` arguments follows.
    static func appendArrayHeader(_ count: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "*"))
        appendDecimal(count, to: &out)
        out.append(13); out.append(10)
    }

    /// One argument: `$length\r\n`, its bytes, `\r\n`.
    static func appendBulk(_ arg: [UInt8], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "$"))
        appendDecimal(arg.count, to: &out)
        out.append(13); out.append(10)
        out.append(contentsOf: arg)
        out.append(13); out.append(10)
    }

    /// One argument given as two pieces, `prefix` then `suffix` (its UTF-8).
    static func appendBulk(_ prefix: StaticString, _ suffix: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "$"))
        appendDecimal(prefix.utf8CodeUnitCount + suffix.utf8.count, to: &out)
        out.append(13); out.append(10)
        out.append(contentsOf: UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount))
        out.append(contentsOf: suffix.utf8)
        out.append(13); out.append(10)
    }

    /// One argument that is a number, written in decimal.
    static func appendBulkDecimal(_ value: Int, to out: inout [UInt8]) {
        var digits = 1
        var rest = value
        while rest >= 10 { rest /= 10; digits += 1 }
        out.append(UInt8(ascii: "$"))
        appendDecimal(digits, to: &out)
        out.append(13); out.append(10)
        appendDecimal(value, to: &out)
        out.append(13); out.append(10)
    }

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: digits))
        var v = value
        for i in stride(from: start + digits - 1, through: start, by: -1) {
            out[i] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
        }
    }
}

/// Whoever waits for a call's replies: a task suspended in `run`, or a call started ahead of
/// its await (`start`). Resumed exactly once by the loop, like a continuation.
enum RedisReplyWaiter: Sendable {
    case task(CheckedContinuation<[RedisReply], any Error>)
    case pending(RedisPendingReplies)

    func resume(returning replies: [RedisReply]) {
        switch self {
        case .task(let k): k.resume(returning: replies)
        case .pending(let p): p.complete(.success(replies))
        }
    }

    func resume(throwing error: any Error) {
        switch self {
        case .task(let k): k.resume(throwing: error)
        case .pending(let p): p.complete(.failure(error))
        }
    }
}

/// The replies of commands already sent (`RedisClient.start…`), to be awaited once with
/// `value()`. A caller that starts its Redis write, does other work (a click waits for its
/// PostgreSQL commit) and then awaits usually finds the replies there: no child task and no
/// suspension for the Redis half.
///
/// Cancellation: a task cancelled while it awaits `value()` gets `CancellationError` at once,
/// and the loop is told to forget the call (replies already on their way are read and dropped),
/// as for a cancelled `command`. Replies that came first are returned even to a cancelled task.
public final class RedisPendingReplies: Sendable {
    private enum State {
        case sent
        case awaited(CheckedContinuation<[RedisReply], any Error>)
        case answered(Result<[RedisReply], any Error>)
        /// Handed to the awaiting task (or given up by it): later answers are dropped.
        case finished
    }

    private let state = Mutex(State.sent)
    /// Where the call went, to cancel it (nil: it was refused before it was sent).
    private let loop: RedisEventLoop?
    private let id: UInt64

    init(loop: RedisEventLoop, id: UInt64) {
        self.loop = loop
        self.id = id
    }

    /// Already failed (a command refused before it was sent).
    init(failed error: any Error) {
        state.withLock { $0 = .answered(.failure(error)) }
        loop = nil
        id = 0
    }

    /// The loop's answer; the first one counts.
    func complete(_ result: Result<[RedisReply], any Error>) {
        let waiting: CheckedContinuation<[RedisReply], any Error>? = state.withLock { s in
            switch s {
            case .sent:
                s = .answered(result)
                return nil
            case .awaited(let k):
                s = .finished
                return k
            case .answered, .finished:
                return nil
            }
        }
        waiting?.resume(with: result)
    }

    /// The replies, in order (waits for them if they have not come yet). Await it once.
    /// - Throws: what `RedisClient.pipeline` throws; `CancellationError`.
    public func value() async throws -> [RedisReply] {
        if let ready = takeAnswer() { return try ready.get() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<[RedisReply], any Error>) in
                let ready: Result<[RedisReply], any Error>? = state.withLock { s in
                    switch s {
                    case .sent:
                        s = .awaited(k)
                        return nil
                    case .answered(let r):
                        s = .finished
                        return r
                    case .finished:
                        return .failure(CancellationError())  // cancelled before it got here
                    case .awaited:
                        preconditionFailure("RedisPendingReplies.value() awaited twice")
                    }
                }
                if let ready { k.resume(with: ready) }
            }
        } onCancel: {
            let waiting: CheckedContinuation<[RedisReply], any Error>?? = state.withLock { s in
                switch s {
                case .sent:
                    s = .finished
                    return .some(nil)
                case .awaited(let k):
                    s = .finished
                    return .some(k)
                case .answered, .finished:
                    return nil
                }
            }
            guard let waiting else { return }
            waiting?.resume(throwing: CancellationError())
            loop?.cancel(call: id)
        }
    }

    private func takeAnswer() -> Result<[RedisReply], any Error>? {
        state.withLock { s in
            guard case .answered(let r) = s else { return nil }
            s = .finished
            return r
        }
    }
}
