import Foundation
import Glibc
import RPC
import Synchronization
import SystemCalls
import SystemTestSupport
import Testing
@testable import Redis

/// A stand-in for an HTTP event loop: one thread that drives a `HostedPoller` when its
/// descriptor is readable and runs the jobs of tasks that prefer it (`TaskExecutor`), as
/// `EventLoop` does.
final class TestHost: TaskExecutor, @unchecked Sendable {
    private let poller: any HostedPoller
    private let wakeFD: Int32
    private let inbox = Mutex<(jobs: [UnownedJob], stop: Bool)>(([], false))
    private let threadID = Atomic<UInt>(0)
    private let ended = Atomic<Bool>(false)

    init(_ poller: any HostedPoller) throws {
        self.poller = poller
        wakeFD = try Syscalls.eventFD()
        let t = Thread { [self] in run() }
        t.start()
        while threadID.load(ordering: .acquiring) == 0 { usleep(1000) }
    }

    deinit { Syscalls.close(wakeFD) }

    var thread: UInt { threadID.load(ordering: .acquiring) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        inbox.withLock { $0.jobs.append(job) }
        Syscalls.signalEventFD(wakeFD)
    }

    /// Stops driving the poller (`hostEnded`) and returns once the thread is done.
    func stop() {
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

/// The client's loops driven by hosts (the HTTP event loops in `pixtrackd`): a caller on a
/// host's thread is served by that host's loop, deadlines still fire, and a host that stops
/// hands its loop to a thread of its own.
@Suite struct RedisHostingTests {
    static func client(loops: Int, _ configure: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: RedisTestEnv.redisURL())
        configure(&configuration)
        return RedisClient(configuration, logger: Logger(minimum: .error), loops: loops)
    }

    @Test func aCallerOnAHostThreadIsServedByThatHostsLoopOnThatThread() async throws {
        let redis = try Self.client(loops: 2)
        let pollers = redis.pollersForHosting()
        try #require(pollers.count == 2)
        #expect(redis.pollersForHosting().isEmpty, "each loop is handed out once")
        let hosts = try pollers.map { try TestHost($0) }
        let prefix = RedisTestEnv.uniquePrefix("hosted")

        // 50 calls from tasks that run on host 1: loop 1 writes them all, on host 1's thread.
        let onHost = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<50 {
                group.addTask(executorPreference: hosts[1]) {
                    let before = UInt(pthread_self())
                    try await redis.set(prefix + "\(i)", "v\(i)", ttlSeconds: 60)
                    return before == hosts[1].thread && UInt(pthread_self()) == hosts[1].thread
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(onHost.count == 50 && onHost.allSatisfy { $0 }, "started and resumed on the host's thread")
        #expect(redis.loopThreads == [hosts[0].thread, hosts[1].thread], "each loop runs on its host's thread, none on its own")
        #expect(redis.loopCounters[1].commandsWritten == 50 && redis.loopCounters[0].commandsWritten == 0,
                "a caller on host 1 goes to loop 1: \(redis.loopCounters.map(\.commandsWritten))")

        // Callers elsewhere take the loops in turn, and read what host 1's callers wrote.
        let values = try await withThrowingTaskGroup(of: String?.self) { group in
            for i in 0..<50 { group.addTask { try await redis.getString(prefix + "\(i)") } }
            return try await group.reduce(into: Set<String?>()) { $0.insert($1) }
        }
        #expect(values == Set((0..<50).map { "v\($0)" }))
        #expect(redis.loopCounters[0].commandsWritten > 0, "loop 0 served some of the other callers")
        await redis.close()
        for host in hosts { host.stop() }
    }

    @Test func aHostedLoopStillTimesOutAgainstABlackHole() async throws {
        let hole = try BlackHoleListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: hole.port)
        configuration.commandTimeout = .milliseconds(300)
        let redis = RedisClient(configuration, logger: Logger(minimum: .error), loops: 1)
        let host = try TestHost(try #require(redis.pollersForHosting().first))
        for _ in 0..<2 {
            let (error, elapsed) = await measure { await redisError { try await redis.ping() } }
            guard case .timeout? = error else {
                Issue.record("expected .timeout, got \(String(describing: error))")
                break
            }
            // The host sleeps in poll(-1): only the loop's timer can end the wait.
            #expect(elapsed >= .milliseconds(280) && elapsed < .seconds(15), "the 300 ms command timeout (\(elapsed))")
        }
        await redis.close()
        host.stop()
    }

    @Test func whenTheHostStopsTheLoopGoesOnOnAThreadOfItsOwn() async throws {
        let redis = try Self.client(loops: 1)
        let host = try TestHost(try #require(redis.pollersForHosting().first))
        let key = RedisTestEnv.uniquePrefix("handover") + "k"
        try await redis.set(key, "before", ttlSeconds: 60)
        #expect(redis.loopThreads == [host.thread])
        host.stop()
        try await redis.set(key, "after", ttlSeconds: 60)
        #expect(try await redis.getString(key) == "after")
        let thread = try #require(redis.loopThreads.first)
        #expect(thread != 0 && thread != host.thread, "a thread of its own now")
        await redis.close()
        let closed = await redisError { try await redis.ping() }
        #expect(closed.map { if case .unavailable = $0 { true } else { false } } == true, "closed: \(String(describing: closed))")
    }

    @Test func closingAHostedClientEndsItsLoopWhileTheHostRuns() async throws {
        let redis = try Self.client(loops: 2)
        let hosts = try redis.pollersForHosting().map { try TestHost($0) }
        try await redis.ping()
        try await redis.ping()
        await redis.close()  // returns only once both loops finished, on their hosts
        let closed = await redisError { try await redis.ping() }
        #expect(closed.map { if case .unavailable = $0 { true } else { false } } == true)
        for host in hosts { host.stop() }  // hostEnded after the end changes nothing
        #expect(await redisError { try await redis.ping() } != nil)
    }
}
