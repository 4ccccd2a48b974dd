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
/// Invariant that makes `@unchecked Sendable` safe: `handlers`, `dirty` and `afterTick` are
/// touched only on the loop thread; the cross-thread queue is guarded by `queue`'s mutex.
final class EventLoop: @unchecked Sendable {
    let index: Int
    private let epfd: Int32
    private let wakeFD: Int32
    private let queue = Mutex<[@Sendable () -> Void]>([])
    private var handlers: [Int32: EventLoopHandler] = [:]
    /// Flushed once per loop iteration, after events and queued work ran.
    private var dirty: [EventLoopHandler] = []
    private var flushing: [EventLoopHandler] = []
    private let stopped = Atomic<Bool>(false)
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
    func execute(_ work: @escaping @Sendable () -> Void) {
        let wasEmpty = queue.withLock { q in
            q.append(work)
            return q.count == 1
        }
        if wasEmpty { wake() }
    }

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
        while !stopped.load(ordering: .acquiring) {
            guard let n = try? Syscalls.epollWait(epfd, fds: &fds, events: &events, timeoutMs: 1000) else { break }
            for i in 0..<n {
                let fd = fds[i]
                if fd == wakeFD {
                    Syscalls.drainEventFD(wakeFD)
                    continue
                }
                handlers[fd]?.handleEvents(events[i])
            }
            let work = queue.withLock { q -> [@Sendable () -> Void] in
                let w = q
                q.removeAll(keepingCapacity: true)
                return w
            }
            for w in work { w() }
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
    }
}
