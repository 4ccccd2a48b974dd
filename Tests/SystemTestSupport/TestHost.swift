import Foundation
import Glibc
import Synchronization
import SystemCalls

/// A stand-in for an HTTP event loop: one thread that drives a `HostedPoller` when its
/// descriptor is readable and runs the jobs of tasks that prefer it (`TaskExecutor`), as
/// `EventLoop` does.
public final class TestHost: TaskExecutor, @unchecked Sendable {
    private let poller: any HostedPoller
    private let wakeFD: Int32
    private let inbox = Mutex<(jobs: [UnownedJob], stop: Bool)>(([], false))
    private let threadID = Atomic<UInt>(0)
    private let ended = Atomic<Bool>(false)

    public init(_ poller: any HostedPoller) throws {
        self.poller = poller
        wakeFD = try Syscalls.eventFD()
        let t = Thread { [self] in run() }
        t.start()
        while threadID.load(ordering: .acquiring) == 0 { usleep(1000) }
    }

    deinit { Syscalls.close(wakeFD) }

    public var thread: UInt { threadID.load(ordering: .acquiring) }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        inbox.withLock { $0.jobs.append(job) }
        Syscalls.signalEventFD(wakeFD)
    }

    /// Stops driving the poller (`hostEnded`) and returns once the thread is done.
    public func stop() {
        inbox.withLock { $0.stop = true }
        Syscalls.signalEventFD(wakeFD)
        while !ended.load(ordering: .acquiring) { usleep(1000) }
    }

    private func run() {
        poller.runReady()  // as `EventLoop.host` does: the poller learns its thread
        threadID.store(UInt(pthread_self()), ordering: .releasing)
        var fds = [pollfd(fd: poller.pollDescriptor, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        while true {
            _ = poll(&fds, 2, -1)
            if fds[1].revents != 0 { Syscalls.drainEventFD(wakeFD) }
            if fds[0].revents != 0 { poller.runReady() }
            let (jobs, stop) = inbox.withLock { box in
                defer { box.jobs = [] }
                return (box.jobs, box.stop)
            }
            for job in jobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
            if stop {
                poller.hostEnded()
                break
            }
        }
        ended.store(true, ordering: .releasing)
    }
}

