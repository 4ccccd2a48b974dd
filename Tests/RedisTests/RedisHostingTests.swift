import Foundation
import Glibc
import RPC
import Synchronization
import SystemCalls
import SystemTestSupport
import Testing
@testable import Redis

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
