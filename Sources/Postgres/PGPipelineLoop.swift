import CSystemShims
import Glibc
import RPC
import Synchronization
import SystemCalls

/// One PostgreSQL connection driven without blocking by an epoll loop: libpq's asynchronous API
/// in pipeline mode (`PQsendQueryParams` + `PQpipelineSync` per statement, `PQflush`,
/// `PQconsumeInput`, `PQisBusy`, `PQgetResult`). Statements submitted while others are on the
/// wire go out behind them with no round trip of their own, and each one's answer is delivered,
/// in order, to its completion on the loop's thread.
///
/// The loop runs on a thread of its own, or, hosted (`HostedPoller`), on the thread of an HTTP
/// event loop that watches its epoll descriptor: a statement submitted there is written, read
/// and answered on that thread with no other thread woken, and a timerfd in the set stands in
/// for the epoll timeout. When the host stops, the loop moves to a thread of its own.
///
/// What the connection does next is decided by `PGPipelineStateMachine` (tested event by event):
/// the client-side deadline (`statementTimeout + clientTimeoutMargin`, as for `PGConnection`),
/// failing everything on a broken connection, reconnecting on the next statement, the back-off
/// after a failed connect, the bound on statements waiting. The connect itself (TCP or TLS,
/// authentication, the session settings) is blocking libpq on a short-lived thread, bounded by
/// `connectTimeout`, so a slow connect never stalls the host's loop.
///
/// Every statement runs on its own (autocommit, its own Sync): one that fails affects no other.
/// Statements are sent unnamed (parsed at each run), or, when the caller names them
/// (`preparedAs`), prepared once per connection and then only bound and executed: a statement
/// run often with the same text skips PostgreSQL's parse and plan (the state machine keeps the
/// names and their bound).
public final class PGPipelineLoop: @unchecked Sendable {
    /// Called once per statement, on the loop's thread: keep it short (resume a continuation,
    /// submit the next statement).
    public typealias Completion = @Sendable (Result<PGRows, PGError>) -> Void

    public struct Configuration: Sendable {
        /// `postgresql://…` or a libpq key/value string, as for `PGPoolConfiguration`.
        public var url: String
        public var connection = PGConnectionOptions()
        /// After a failed connect, statements fail at once for this long (then one connects again).
        public var reconnectBackoff: Duration = .seconds(1)
        /// The most statements sent or waiting at once; more are refused (`.poolTimeout`).
        public var capacity = 4096

        public init(url: String) { self.url = url }
    }

    /// Counts published by the loop after each turn (for tests and metrics).
    public struct Counts: Sendable, Equatable {
        /// Connects that succeeded, and that failed.
        public var connects = 0
        public var connectFailures = 0
        /// Statements answered (success or error) and failed without an answer (broken, refused, closed).
        public var answered = 0
        public var failed = 0
        /// Statements on the wire now, and held while connecting.
        public var outstanding = 0
        public var waiting = 0
        /// Statements prepared (a named statement's first run on a connection).
        public var prepares = 0
    }

    struct Request: Sendable {
        let statement: PGConnection.Statement
        /// The prepared statement's name (`submit(_:_:preparedAs:completion:)`); nil: unnamed.
        let name: String?
        let completion: Completion
    }

    /// A connected `PGconn *` handed from the connect thread to the loop (one owner at a time).
    private final class Handle: @unchecked Sendable {
        let conn: OpaquePointer
        init(_ conn: OpaquePointer) { self.conn = conn }
    }

    private enum Job: Sendable {
        case submit(Request)
        case connected(Handle)
        case connectFailed(PGError)
        case close(CheckedContinuation<Void, Never>?)
    }

    private struct Inbox {
        var jobs: [Job] = []
        var signalled = false
        var started = false
        var closed = false
        var exited = false
    }

    let configuration: Configuration
    let logger: Logger
    private let inbox = Mutex(Inbox())
    private let published = Mutex(Counts())
    private let epfd: Int32
    private let wakeFD: Int32
    private let timerFD: Int32
    /// The thread running the loop now (0: none).
    private let ownerID = Atomic<UInt>(0)

    // Loop-confined from here on.
    private var machine: PGPipelineStateMachine<Request>
    private var conn: OpaquePointer?
    private var socketFD: Int32 = -1
    private var watchingWrites = false
    /// The answer being read for the oldest statement: its rows, its error, whether its results
    /// are over (what comes next is its Sync).
    private var headRows: PGRows?
    private var headError: PGError?
    private var awaitingSync = false
    /// Whether the oldest statement's prepare group (`prepareThenRun`) has been read, and
    /// whether it failed.
    private var headPrepareRead = false
    private var headPrepareFailed = false
    private var connectInFlight = false
    private var closing = false
    private var finished = false
    private var inTurn = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var counts = Counts()
    private var now = ContinuousClock.now
    private var timerDue: ContinuousClock.Instant?
    private var eventFDs = [Int32](repeating: 0, count: 8)
    private var eventMasks = [UInt32](repeating: 0, count: 8)

    public init(_ configuration: Configuration, logger: Logger) throws {
        // libpq's own text may quote the URL: it is not repeated.
        if LibPQ.conninfoError(configuration.url) != nil {
            throw PGError(.invalidArgument, "DATABASE_URL is not a valid PostgreSQL connection string")
        }
        self.configuration = configuration
        self.logger = logger
        let options = configuration.connection
        machine = PGPipelineStateMachine(answerTimeout: options.statementTimeout == .zero ? nil : options.statementTimeout + options.clientTimeoutMargin,
                                         backoff: configuration.reconnectBackoff, capacity: configuration.capacity)
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        timerFD = pt_timerfd_create()
        guard epfd >= 0, wakeFD >= 0, timerFD >= 0, pt_epoll_add(epfd, wakeFD, EPOLLIN.rawValue) == 0,
              pt_epoll_add(epfd, timerFD, EPOLLIN.rawValue) == 0
        else {
            throw PGError(.unavailable, "cannot create the PostgreSQL pipeline's descriptors")
        }
    }

    deinit {
        if let conn { LibPQ.finish(conn) }
        if epfd >= 0 { Glibc.close(epfd) }
        if wakeFD >= 0 { Glibc.close(wakeFD) }
        if timerFD >= 0 { Glibc.close(timerFD) }
    }

    public var counters: Counts { published.withLock { $0 } }

    /// The thread running the loop now, 0 when none (for tests).
    public var thread: UInt { ownerID.load(ordering: .relaxed) }

    /// Hands the loop to a host instead of starting its own thread. Nil when it already runs
    /// (a statement came first) or is closed.
    public func hostedPoller() -> (any HostedPoller)? {
        let taken: Bool = inbox.withLock { box in
            guard !box.started, !box.closed else { return false }
            box.started = true
            return true
        }
        return taken ? HostedPGLoop(self) : nil
    }

    // MARK: - Caller side (any thread)

    /// Runs one parameterized statement; `completion` gets its rows or its error, on the loop's
    /// thread (or at once, on this one, when it is refused before reaching the loop).
    /// - Parameter name: run it as this prepared statement (prepared on the connection at its
    ///   first use). One name should always carry the same text and parameter types; a caller
    ///   that breaks that rule gets its statement run unnamed, never another one.
    /// - Errors: `.invalidArgument` (a NUL byte), `.poolClosed`, `.poolTimeout` (too many
    ///   waiting), `.unavailable` (down, or the connection broke before the answer: the statement
    ///   may or may not have run), `.timeout` (no answer within the client deadline; likewise), or
    ///   the statement's own error.
    public func submit(_ sql: String, _ params: [PGValue?], preparedAs name: String? = nil, completion: @escaping Completion) {
        let statement: PGConnection.Statement
        do {
            statement = try PGConnection.Statement(sql, params, prepare: false)
        } catch let error as PGError {
            return completion(.failure(error))
        } catch {
            return completion(.failure(PGError(.invalidArgument, "statement could not be encoded")))
        }
        enum Outcome { case closed, queued, wake, start }
        let request = Request(statement: statement, name: name, completion: completion)
        let onLoop = inTurnOnThisThread
        let outcome: Outcome = inbox.withLock { box in
            if box.closed || box.exited { return .closed }
            box.jobs.append(.submit(request))
            if !box.started {
                box.started = true
                box.signalled = true
                return .start
            }
            // From inside a turn on the loop thread, the turn takes it before it ends.
            if box.signalled || onLoop { return .queued }
            box.signalled = true
            return .wake
        }
        switch outcome {
        case .closed: completion(.failure(PGError(.poolClosed, "the PostgreSQL pipeline is closed")))
        case .queued: break
        case .wake: signal()
        case .start: spawn()
        }
    }

    /// Runs one statement and returns its rows (`submit`, awaited).
    public func query(_ sql: String, _ params: [PGValue?] = [], preparedAs name: String? = nil) async throws -> PGRows {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<PGRows, any Error>) in
            submit(sql, params, preparedAs: name) { k.resume(with: $0.mapError { $0 as any Error }) }
        }
    }

    /// Refuses new statements and fails those waiting (`.poolClosed`; one on the wire may still
    /// have run). Returns when the loop has finished.
    public func close() async {
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

    private var inTurnOnThisThread: Bool {
        let id = ownerID.load(ordering: .relaxed)
        return id != 0 && id == UInt(pthread_self()) && inTurn
    }

    /// Appends a job for the loop; false when the loop has finished (nothing takes it).
    @discardableResult
    private func post(_ job: Job) -> Bool {
        let (taken, wake): (Bool, Bool) = inbox.withLock { box in
            guard !box.exited else { return (false, false) }
            box.jobs.append(job)
            if box.signalled { return (true, false) }
            box.signalled = true
            return (true, true)
        }
        if wake { signal() }
        return taken
    }

    private func signal() { Syscalls.signalEventFD(wakeFD) }

    /// Runs the loop on a new thread (at the first statement, or when the host stopped).
    @discardableResult
    private func spawn() -> Bool {
        guard Syscalls.detachedThread({ self.runOwnThread() }) else {
            failEverything(PGError(.unavailable, "cannot start the PostgreSQL pipeline thread"))
            return false
        }
        signal()
        return true
    }

    /// No loop can run: what waits in the inbox fails, later statements are refused.
    private func failEverything(_ error: PGError) {
        let jobs: [Job] = inbox.withLock { box in
            box.exited = true
            defer { box.jobs = [] }
            return box.jobs
        }
        for job in jobs {
            switch job {
            case .submit(let r): r.completion(.failure(error))
            case .close(let k?): k.resume()
            case .connected(let h): LibPQ.finish(h.conn)
            default: break
            }
        }
    }

    // MARK: - The loop

    @inline(__always) private func assertOnLoop() {
        assert(ownerID.load(ordering: .relaxed) == UInt(pthread_self()), "PostgreSQL pipeline state touched off its loop thread")
    }

    private func runOwnThread() {
        ownerID.store(UInt(pthread_self()), ordering: .relaxed)
        while !turn(timeoutMs: timeoutMs()) {}
        finish()
    }

    /// One turn: readiness, jobs (those added meanwhile from this thread too), the deadline,
    /// the flush. True when the loop is done (closed, no connect left to report).
    private func turn(timeoutMs: Int32) -> Bool {
        let n = pt_epoll_wait(epfd, &eventFDs, &eventMasks, Int32(eventFDs.count), timeoutMs)
        now = .now
        inTurn = true
        defer { inTurn = false }
        for i in 0..<max(0, Int(n)) {
            let fd = eventFDs[i]
            if fd == wakeFD {
                Syscalls.drainEventFD(wakeFD)
            } else if fd == timerFD {
                Syscalls.drainEventFD(timerFD)
                timerDue = nil
            } else if fd == socketFD {
                if eventMasks[i] & EPOLLOUT.rawValue != 0 { flush() }
                if conn != nil, eventMasks[i] & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { readable() }
            }
        }
        while true {
            let jobs: [Job] = inbox.withLock { box in
                box.signalled = false
                defer { box.jobs.removeAll(keepingCapacity: true) }
                return box.jobs
            }
            if jobs.isEmpty { break }
            for job in jobs { handle(job) }
        }
        if machine.isOverdue(now: now) {
            breakConnection(PGError(.timeout, "no answer from PostgreSQL within the client deadline"))
        }
        if conn != nil { flush() }
        publish()
        return closing && !connectInFlight
    }

    private func finish() {
        finished = true
        if timerDue != nil { _ = pt_timerfd_arm(timerFD, -1) }
        timerDue = nil
        let late: [Job] = inbox.withLock { box in
            box.exited = true
            defer { box.jobs = [] }
            return box.jobs
        }
        let closed = PGError(.poolClosed, "the PostgreSQL pipeline is closed")
        for job in late {
            switch job {
            case .submit(let r): r.completion(.failure(closed))
            case .close(let k?): closeWaiters.append(k)
            case .connected(let h): LibPQ.finish(h.conn)
            default: break
            }
        }
        publish()
        for k in closeWaiters { k.resume() }
        closeWaiters = []
    }

    // MARK: Hosted

    fileprivate var pollDescriptor: Int32 { epfd }

    fileprivate func hostedTurn() {
        guard !finished else { return }
        if ownerID.load(ordering: .relaxed) != UInt(pthread_self()) { ownerID.store(UInt(pthread_self()), ordering: .relaxed) }
        if turn(timeoutMs: 0) {
            finish()
            return
        }
        armTimer()
    }

    fileprivate func hostDetached() {
        guard !finished else { return }
        ownerID.store(0, ordering: .relaxed)
        if spawn() { return }
        finished = true
        let error = PGError(.unavailable, "cannot start the PostgreSQL pipeline thread")
        fail(machine.close(), error)
        closeConnection()
    }

    private func armTimer() {
        guard let due = machine.deadline else { return }
        if let armed = timerDue, armed <= due { return }
        let left = due - now
        if pt_timerfd_arm(timerFD, left <= .zero ? 0 : Int(left.roundedUpMilliseconds)) == 0 { timerDue = due }
    }

    private func timeoutMs() -> Int32 {
        guard let due = machine.deadline else { return -1 }
        let left = due - .now
        return left <= .zero ? 0 : Int32(clamping: left.roundedUpMilliseconds)
    }

    // MARK: Jobs

    private func handle(_ job: Job) {
        assertOnLoop()
        switch job {
        case .submit(let request):
            if closing { return request.completion(.failure(PGError(.poolClosed, "the PostgreSQL pipeline is closed"))) }
            let prepared = request.name.map { PGPipelineStateMachine<Request>.Prepared(name: $0, sql: request.statement.sql, types: request.statement.types) }
            switch machine.submit(request, prepared: prepared, now: now) {
            case .send(let s): send(s)
            case .hold: break
            case .connect: startConnect()
            case .refuse(let r, let error):
                counts.failed += 1
                r.completion(.failure(error))
            }
        case .connected(let handle):
            connectInFlight = false
            connected(handle.conn)
        case .connectFailed(let error):
            connectInFlight = false
            counts.connectFailures += 1
            logger.warning("postgres_pipeline_connect_failed", ("error", error.description))
            fail(machine.connectFailed(now: now), error)
        case .close(let k):
            if let k { closeWaiters.append(k) }
            guard !closing else { return }
            closing = true
            fail(machine.close(), PGError(.poolClosed, "the PostgreSQL pipeline was closed before the answer"))
            closeConnection()
        }
    }

    private func fail(_ requests: [Request], _ error: PGError) {
        counts.failed += requests.count
        for r in requests { r.completion(.failure(error)) }
    }

    private func startConnect() {
        connectInFlight = true
        let configuration = self.configuration
        let started = Syscalls.detachedThread { [self] in
            do {
                let connection = try PGConnection.connect(url: configuration.url, options: configuration.connection)
                guard let conn = connection.takeHandle() else { throw PGError(.unavailable, "connection is closed") }
                if !post(.connected(Handle(conn))) { LibPQ.finish(conn) }
            } catch let error as PGError {
                post(.connectFailed(error))
            } catch {
                post(.connectFailed(PGError(.unavailable, "could not connect to PostgreSQL")))
            }
        }
        if !started { handle(.connectFailed(PGError(.unavailable, "cannot start a PostgreSQL connect thread"))) }
    }

    private func connected(_ handle: OpaquePointer) {
        guard !closing, machine.state == .connecting else {
            LibPQ.finish(handle)
            return
        }
        let fd = LibPQ.socket(handle)
        guard fd >= 0, LibPQ.setNonBlocking(handle, true), LibPQ.enterPipelineMode(handle),
              pt_epoll_add(epfd, fd, EPOLLIN.rawValue) == 0
        else {
            LibPQ.finish(handle)
            counts.connectFailures += 1
            fail(machine.connectFailed(now: now), PGError(.unavailable, "could not put the PostgreSQL connection in pipeline mode"))
            return
        }
        conn = handle
        socketFD = fd
        counts.connects += 1
        for s in machine.connected(now: now) {
            guard conn != nil else { break }  // broke while sending: the rest already failed
            send(s)
        }
    }

    // MARK: I/O

    private func send(_ outgoing: PGPipelineStateMachine<Request>.Send) {
        guard let conn else { return }
        let s = outgoing.request.statement
        let queued: Bool
        switch outgoing.way {
        case .unnamed:
            queued = withCStringArray(s.texts) { values in LibPQ.sendQueryParams(conn, s.sql, s.types, values) }
        case .prepared(let name):
            queued = withCStringArray(s.texts) { values in LibPQ.sendQueryPrepared(conn, name, s.texts.count, values) }
        case .prepareThenRun(let name):
            counts.prepares += 1
            queued = LibPQ.sendPrepare(conn, name, s.sql, s.types)
                && withCStringArray(s.texts) { values in LibPQ.sendQueryPrepared(conn, name, s.texts.count, values) }
        }
        if !(queued && LibPQ.pipelineSync(conn)) {
            breakConnection(PGError(.unavailable, "a statement could not be queued on the PostgreSQL connection"))
        }
    }

    /// Sends what libpq holds; watches for writability while some is left.
    private func flush() {
        guard let conn else { return }
        switch LibPQ.flush(conn) {
        case 0: watchWrites(false)
        case 1: watchWrites(true)
        default: breakConnection(PGError(.unavailable, "sending to PostgreSQL failed"))
        }
    }

    private func watchWrites(_ on: Bool) {
        guard on != watchingWrites, socketFD >= 0 else { return }
        watchingWrites = on
        _ = pt_epoll_mod(epfd, socketFD, on ? EPOLLIN.rawValue | EPOLLOUT.rawValue : EPOLLIN.rawValue)
    }

    private func readable() {
        guard let conn else { return }
        guard LibPQ.consumeInput(conn) else {
            return breakConnection(PGError(.unavailable, "the PostgreSQL connection broke"))
        }
        collect()
        if let conn = self.conn, !LibPQ.isConnectionOK(conn) {
            breakConnection(PGError(.unavailable, "the PostgreSQL connection broke"))
        }
    }

    /// Takes every whole result libpq has read, in order, and answers the statements they finish.
    private func collect() {
        while let conn, machine.outstanding > 0, !LibPQ.isBusy(conn) {
            let result = LibPQ.getResult(conn)
            if awaitingSync {
                guard let result else { return breakConnection(PGError(.unavailable, "PostgreSQL pipeline out of step (no sync)")) }
                let kind = LibPQ.resultKind(result)
                LibPQ.clear(result)
                guard kind == .pipelineSync else { return breakConnection(PGError(.unavailable, "PostgreSQL pipeline out of step")) }
                let outcome: Result<PGRows, PGError> = headError.map { .failure($0) }
                    ?? .success(headRows ?? PGRows(columns: PGColumns(names: [], typeOIDs: []), cells: [], affectedRows: 0, commandTag: ""))
                let prepareFailed = headPrepareFailed
                let sqlState = headError?.sqlState
                headRows = nil
                headError = nil
                awaitingSync = false
                headPrepareRead = false
                headPrepareFailed = false
                guard let request = machine.answered(prepareFailed: prepareFailed, sqlState: sqlState, now: now) else { return }
                counts.answered += 1
                request.completion(outcome)
                continue
            }
            // A statement sent `prepareThenRun` answers with the prepare's group first.
            let inPrepare: Bool
            if !headPrepareRead, case .prepareThenRun = machine.oldestWay { inPrepare = true } else { inPrepare = false }
            guard let result else {
                if inPrepare {
                    headPrepareRead = true  // the prepare's group is over; the statement's comes next
                } else {
                    awaitingSync = true  // this statement's results are over; its Sync comes next
                }
                continue
            }
            defer { LibPQ.clear(result) }
            switch LibPQ.resultKind(result) {
            case .commandOK, .tuples:
                if !inPrepare, headRows == nil, headError == nil { headRows = PGConnection.copyRows(result) }
            case .error:
                if headError == nil {
                    headError = PGError(result: result, connection: conn)
                    headPrepareFailed = inPrepare
                }
            case .pipelineAborted:
                if headError == nil { headError = PGError(.queryFailed, "statement skipped by PostgreSQL (pipeline aborted)") }
            case .pipelineSync, .unexpected:
                return breakConnection(PGError(.unavailable, "unsupported result on the PostgreSQL pipeline (COPY?)"))
            }
        }
    }

    /// Everything on the connection fails with `error`; the connection closes and the next
    /// statement opens a new one.
    private func breakConnection(_ error: PGError) {
        let failed = machine.broken()
        closeConnection()
        fail(failed, error)
        logger.info("postgres_pipeline_dropped", ("error", error.description), ("failed_statements", String(failed.count)))
    }

    private func closeConnection() {
        if socketFD >= 0 { _ = pt_epoll_del(epfd, socketFD) }
        socketFD = -1
        watchingWrites = false
        if let conn { LibPQ.finish(conn) }
        conn = nil
        headRows = nil
        headError = nil
        awaitingSync = false
        headPrepareRead = false
        headPrepareFailed = false
    }

    private func publish() {
        counts.outstanding = machine.outstanding
        counts.waiting = machine.waiting
        let snapshot = counts
        published.withLock { $0 = snapshot }
    }
}

/// What an event loop drives (`PGPipelineLoop.hostedPoller()`).
private final class HostedPGLoop: HostedPoller {
    let loop: PGPipelineLoop
    init(_ loop: PGPipelineLoop) { self.loop = loop }
    var pollDescriptor: Int32 { loop.pollDescriptor }
    func runReady() { loop.hostedTurn() }
    func hostEnded() { loop.hostDetached() }
}
