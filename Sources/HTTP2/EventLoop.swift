import SystemCalls
import CSystemShims
import Glibc
import Synchronization
import Foundation

/// Something registered with an `EventLoop` for readiness events on a file descriptor.
/// Called on the loop's thread only.
protocol EventLoopHandler: AnyObject {
    func handleEvents(_ events: UInt32)
    /// About once a second, for timeouts.
    func tick(now: ContinuousClock.Instant)
    /// At the end of a loop iteration in which `markDirty(self)` was called.
    func flushDirty()
}

extension EventLoopHandler {
    func tick(now: ContinuousClock.Instant) {}
    func flushDirty() {}
}

/// One epoll thread. Sockets registered here are read, written and parsed on this thread only;
/// other threads hand work over with `execute`, which wakes the loop through an eventfd.
///
/// The loop is also a `TaskExecutor`: a task started with it as its executor preference (an
/// HTTP route or RPC that never blocks) runs on this thread and resumes here after every
/// `await`, so its answer is written without a hop to the cooperative pool and back.
///
/// Invariant that makes `@unchecked Sendable` safe: `handlers`, `dirty` and `afterTick` are
/// touched only on the loop thread; the cross-thread queue is guarded by `queue`'s mutex.
final class EventLoop: @unchecked Sendable {
    /// Work handed to the loop: closures, and the jobs of tasks that prefer it.
    private struct Inbox {
        var work: [@Sendable () -> Void] = []
        var jobs: [UnownedJob] = []
        /// Set when the loop has ended: jobs then go to the global executor.
        var closed = false
        var isEmpty: Bool { work.isEmpty && jobs.isEmpty }
    }

    let index: Int
    private let epfd: Int32
    private let wakeFD: Int32
    private let queue = Mutex(Inbox())
    private var handlers: [Int32: EventLoopHandler] = [:]
    /// Flushed once per loop iteration, after events and queued work ran.
    private var dirty: [EventLoopHandler] = []
    private var flushing: [EventLoopHandler] = []
    private let stopped = Atomic<Bool>(false)
    /// Components this loop drives (`host`); loop thread only.
    private var hosted: [any HostedPoller] = []
    private var thread: Thread?
    /// The loop thread's id, once it runs (0 before): what `inLoop` compares with.
    private let loopThreadID = Atomic<UInt>(0)
    /// Scratch space for socket reads; loop thread only, never escapes a read.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)

    init(index: Int) throws {
        self.index = index
        epfd = try Syscalls.epollCreate()
        wakeFD = try Syscalls.eventFD()
        try Syscalls.epollAdd(epfd, wakeFD, events: EPOLLIN.rawValue)
    }

    deinit {
        Syscalls.close(epfd)
        Syscalls.close(wakeFD)
        readBuffer.deallocate()
    }

    func start() {
        let t = Thread { [self] in self.run() }
        t.name = "pixtrack-io-\(index)"
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    /// Runs `work` on the loop thread, soon. Safe from any thread.
    ///
    /// The eventfd is written only when the inbox was empty and the caller is another thread:
    /// the loop looks at its inbox before it sleeps (and then does not sleep), so work added from
    /// the loop itself, or behind work not yet taken, needs no wake-up.
    func execute(_ work: @escaping @Sendable () -> Void) {
        _ = push { $0.work.append(work); return true }
    }

    /// Takes the job of a task that prefers this loop (`TaskExecutor`). After `stop`, jobs go
    /// to the global executor, so no task is left suspended for ever.
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let taken = push { q in
            guard !q.closed else { return false }
            q.jobs.append(job)
            return true
        }
        if !taken { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Adds to the inbox with `add` (false: it added nothing) and wakes the loop when it may be
    /// asleep: the inbox was empty and the caller is another thread.
    private func push(_ add: (inout Inbox) -> Bool) -> Bool {
        let (added, wasEmpty) = queue.withLock { q in
            let empty = q.isEmpty
            return (add(&q), empty)
        }
        if added && wasEmpty && !inLoop { wake() }
        return added
    }

    /// True once the loop thread has left its loop (after `stop`).
    var hasEnded: Bool { queue.withLock { $0.closed } }

    func stop() {
        stopped.store(true, ordering: .releasing)
        wake()
    }

    private func wake() {
        Syscalls.signalEventFD(wakeFD)
    }

    // MARK: loop-thread API

    func register(_ fd: Int32, _ handler: EventLoopHandler, events: UInt32) throws {
        assertInLoop()
        try Syscalls.epollAdd(epfd, fd, events: events)
        handlers[fd] = handler
    }

    func modify(_ fd: Int32, events: UInt32) {
        Syscalls.epollModify(epfd, fd, events: events)
    }

    func unregister(_ fd: Int32) {
        Syscalls.epollRemove(epfd, fd)
        handlers[fd] = nil
    }

    /// Drives `poller` on this loop's thread from now on (`HostedPoller`): its descriptor is
    /// watched like a socket's. Safe from any thread. When the loop ends, or cannot watch the
    /// descriptor, the poller is told (`hostEnded`) and goes on by itself.
    func host(_ poller: any HostedPoller) {
        execute { [self] in
            do {
                try register(poller.pollDescriptor, HostedPollerHandler(poller), events: EPOLLIN.rawValue)
                hosted.append(poller)
                poller.runReady()  // the component learns its thread now, not at its first event
            } catch {
                poller.hostEnded()
            }
        }
    }

    func forEachHandler(_ body: (EventLoopHandler) -> Void) {
        for h in Array(handlers.values) { body(h) }
    }

    /// Asks for `handler.flushDirty()` at the end of this iteration (coalesces many writes into
    /// one). The handler marks itself at most once per iteration (it keeps its own flag).
    func markDirty(_ handler: EventLoopHandler) {
        assertInLoop()
        dirty.append(handler)
    }

    /// True on this loop's own thread.
    var inLoop: Bool { loopThreadID.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// Confinement check for connection state: in debug builds, a call from any other thread
    /// stops the process at the call site (release builds compile it out).
    @inline(__always)
    func assertInLoop(_ what: StaticString = #function, file: StaticString = #fileID, line: UInt = #line) {
        assert(inLoop, "\(what) called off its event loop thread", file: file, line: line)
    }

    private func run() {
        loopThreadID.store(UInt(pthread_self()), ordering: .relaxed)
        var lastTick = ContinuousClock.now
        var fds = [Int32](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        var inbox = Inbox()
        while !stopped.load(ordering: .acquiring) {
            // Work added from this thread since the last look (or not yet woken for) runs
            // without sleeping first.
            let timeout: Int32 = queue.withLock { $0.isEmpty } ? 1000 : 0
            guard let n = try? Syscalls.epollWait(epfd, fds: &fds, events: &events, timeoutMs: timeout) else { break }
            for i in 0..<n {
                let fd = fds[i]
                if fd == wakeFD {
                    Syscalls.drainEventFD(wakeFD)
                    continue
                }
                handlers[fd]?.handleEvents(events[i])
            }
            queue.withLock { q in swap(&q, &inbox) }
            for w in inbox.work { w() }
            if !inbox.jobs.isEmpty {
                let executor = asUnownedTaskExecutor()
                for job in inbox.jobs { job.runSynchronously(on: executor) }
            }
            inbox.work.removeAll(keepingCapacity: true)
            inbox.jobs.removeAll(keepingCapacity: true)
            let now = ContinuousClock.now
            if now - lastTick >= .seconds(1) {
                lastTick = now
                for h in Array(handlers.values) { h.tick(now: now) }
            }
            while !dirty.isEmpty {
                swap(&dirty, &flushing)
                for h in flushing { h.flushDirty() }
                flushing.removeAll(keepingCapacity: true)
            }
        }
        // Work handed over before the end still runs here (a `host` among it); tasks that were
        // to resume here finish on the global executor instead.
        let left = queue.withLock { q -> Inbox in
            q.closed = true
            defer { q.work = []; q.jobs = [] }
            return q
        }
        for w in left.work { w() }
        for poller in hosted {
            unregister(poller.pollDescriptor)
            poller.hostEnded()
        }
        hosted = []
        for job in left.jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}

extension EventLoop: TaskExecutor {}

/// Forwards a hosted component's readiness to it.
private final class HostedPollerHandler: EventLoopHandler {
    let poller: any HostedPoller
    init(_ poller: any HostedPoller) { self.poller = poller }
    func handleEvents(_ events: UInt32) { poller.runReady() }
}
