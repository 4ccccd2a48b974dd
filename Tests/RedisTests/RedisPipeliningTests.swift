import Testing
import SystemTestSupport
@testable import Redis

/// True once `condition` holds, checked every 10 ms for up to `within` (the I/O thread publishes
/// its counts just after resuming callers).
func eventually(within: Duration = .seconds(2), _ condition: () -> Bool) async -> Bool {
    let end = ContinuousClock.now + within
    while !condition() {
        guard ContinuousClock.now < end else { return false }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return true
}

/// The non-blocking client under concurrency: automatic pipelining, late replies, cancellation
/// and the bounds. Tests that pause or count a server use a private one.
@Suite struct RedisPipeliningTests {
    @Test func aThousandConcurrentCommandsGetTheirOwnRepliesInOrderOverFewConnections() async throws {
        try await PrivateRedis.with { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.poolSize = 2
            configuration.commandTimeout = .seconds(10)
            configuration.acquireTimeout = .seconds(10)
            let redis = RedisClient(configuration, logger: .init(minimum: .error))
            // 50 callers × 20 commands each, all at once: INCR of the caller's own counter
            // answers 1, 2, … 20 only if every reply reaches its own caller, in order.
            let inOrder = try await withThrowingTaskGroup(of: Bool.self) { group in
                for caller in 0..<50 {
                    group.addTask {
                        var seen: [Int64] = []
                        for _ in 0..<20 { seen.append(try await redis.command(["INCR", "c\(caller)"]).integer ?? -1) }
                        return seen == Array(1...20)
                    }
                }
                return try await group.reduce(true) { $0 && $1 }
            }
            #expect(inOrder)
            // 1,000 independent one-shot callers, each writing and reading back its own value.
            let own = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<1000 {
                    group.addTask {
                        let replies = try await redis.pipeline([["SET", "k\(i)", "v\(i)"], ["GET", "k\(i)"]])
                        return replies == [.status("OK"), .bulk(Array("v\(i)".utf8))]
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(own == 1000)

            // What the server saw: 2,000 commands of those kinds from at most 2 connections.
            let stats = try await redis.command(["INFO", "commandstats"]).string ?? ""
            #expect(stats.contains("cmdstat_incr:calls=1000,"), "\(stats)")
            #expect(stats.contains("cmdstat_set:calls=1000,"), "\(stats)")
            let clients = try await redis.command(["CLIENT", "LIST"]).string ?? ""
            let connections = clients.split(separator: "\n").count
            #expect(connections >= 1 && connections <= 2, "\(clients)")
            #expect(redis.statistics.created <= 2)
            // And the client's side: commands shared writes.
            let counters = redis.counters
            #expect(counters.commandsWritten >= 3000)
            #expect(counters.largestWrite > 1, "no write ever carried two commands: \(counters)")
            #expect(counters.writes < counters.commandsWritten, "\(counters)")
            await redis.close()
        }
    }

    @Test func aLateReplyClosesItsConnectionAndFailsOnlyTheCommandsWaitingOnIt() async throws {
        try await PrivateRedis.with { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.poolSize = 1
            configuration.commandTimeout = .milliseconds(300)
            let redis = RedisClient(configuration, logger: .init(minimum: .error))
            for i in 0..<10 { try await redis.set("late\(i)", "value \(i)") }
            let pauser = try RedisClient(url: server.url, logger: .init(minimum: .error))
            // The server holds every command for 5 s, then answers them all: too late.
            try await pauser.command(["CLIENT", "PAUSE", "5000", "ALL"])
            let paused = ContinuousClock.now
            let (errors, elapsed) = await measure {
                await withTaskGroup(of: RedisError?.self) { group in
                    for i in 0..<10 { group.addTask { await redisError { try await redis.get("late\(i)") } } }
                    return await group.reduce(into: [RedisError?]()) { $0.append($1) }
                }
            }
            #expect(errors.allSatisfy { $0 == .timeout("no answer from Redis within the command timeout") }, "\(errors)")
            #expect(elapsed >= .milliseconds(280) && elapsed < .milliseconds(4000), "at the 300 ms command timeout, not the 5 s pause's end (\(elapsed))")
            #expect(await eventually { redis.statistics.created == 0 }, "the late connection was closed")
            // After the pause the server sends the ten late replies (to a closed socket); the
            // new connection's callers each get their own answer, never one of those.
            try await Task.sleep(until: paused + .milliseconds(5200), clock: .continuous)
            let fresh = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in (0..<10).reversed() { group.addTask { try await redis.getString("late\(i)") == "value \(i)" } }
                return try await group.reduce(true) { $0 && $1 }
            }
            #expect(fresh)
            #expect(redis.statistics.created == 1)
            await redis.close()
            await pauser.close()
        }
    }

    @Test func aCancelledCallerReturnsAtOnceWhetherWaitingOrInFlight() async throws {
        // Waiting for room: the only connection is held by a blocking command.
        let redis = try RedisTestEnv.client { $0.poolSize = 1; $0.acquireTimeout = .seconds(40); $0.commandTimeout = .seconds(40) }
        let pusher = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("cancel")
        // Holds the only connection for up to 30 s; the push below lets it go once measured.
        let holder = Task { try await redis.command(["BLPOP", "\(p)held", "30"]) }
        while redis.statistics.created == 0 || redis.statistics.idle > 0 { try await Task.sleep(for: .milliseconds(10)) }
        let waiting = Task { try await redis.ping() }
        while redis.statistics.waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (outcome, elapsed) = await measure { () -> Result<Void, any Error> in
            waiting.cancel()
            return await waiting.result
        }
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(elapsed < .seconds(10), "not when the 30 s BLPOP ends (\(elapsed))")
        #expect(await eventually { redis.statistics.waiting == 0 })
        try await pusher.command(["LPUSH", "\(p)held", "go"])
        #expect(try await holder.value == .array([.bulk(Array("\(p)held".utf8)), .bulk(Array("go".utf8))]))
        await pusher.close()
        try await redis.ping()
        await redis.close()

        // In flight: written to a server that never answers.
        let hole = try BlackHoleListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: hole.port)
        configuration.commandTimeout = .seconds(12)  // close() waits for it: the reply is still owed
        let silent = RedisClient(configuration, logger: .init(minimum: .error))
        let inFlight = Task { try await silent.ping() }
        while silent.counters.outstanding == 0 || silent.counters.commandsWritten == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (cancelled, after) = await measure { () -> Result<Void, any Error> in
            inFlight.cancel()
            return await inFlight.result
        }
        #expect(throws: CancellationError.self) { try cancelled.get() }
        #expect(after < .seconds(6), "well before the 12 s command timeout (\(after))")
        #expect(silent.counters.outstanding == 1, "its reply is still expected, so the connection stays in step")
        await silent.close()
    }

    @Test func commandsWaitingAreBoundedPerConnectionAndInLine() async throws {
        let hole = try BlackHoleListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: hole.port)
        configuration.poolSize = 1
        configuration.maxCommandsPerConnection = 4
        configuration.commandTimeout = .seconds(10)
        configuration.acquireTimeout = .seconds(5)
        let redis = RedisClient(configuration, logger: .init(minimum: .error))
        let onConnection = (0..<4).map { _ in Task { await redisError { try await redis.ping() } } }
        while redis.counters.outstanding < 4 { try await Task.sleep(for: .milliseconds(10)) }
        let started = ContinuousClock.now
        let inLine = (0..<4).map { _ in Task { await redisError { try await redis.ping() } } }
        while redis.statistics.waiting < 4 { try await Task.sleep(for: .milliseconds(10)) }
        // Connection full (4) and line full (4): the next call fails at once.
        let (refused, elapsed) = await measure { await redisError { try await redis.ping() } }
        #expect(refused == .timeout("too many Redis commands waiting (4)"))
        #expect(elapsed < .milliseconds(2500), "at once, not after the 5 s acquire timeout (\(elapsed))")
        // Those in line give up at the acquire timeout, like callers of an exhausted pool.
        for task in inLine {
            #expect(await task.value == .timeout("no Redis connection free within 5.0 seconds (pool of 1)"))
        }
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(4900) && waited < .milliseconds(9500), "the 5 s acquire timeout, before the 10 s command timeout frees the connection (\(waited))")
        // Those on the connection fail at the command timeout, which closes it.
        for task in onConnection {
            #expect(await task.value == .timeout("no answer from Redis within the command timeout"))
        }
        #expect(await eventually { redis.statistics.created == 0 })
        await redis.close()
    }

    @Test func aConnectionKilledMidCommandFailsItsCommandsAndTheNextCallReconnects() async throws {
        let redis = try RedisTestEnv.client { $0.poolSize = 1; $0.commandTimeout = .seconds(40) }
        let killer = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("killed")
        let id = try await redis.command(["CLIENT", "ID"]).integer ?? -1
        let blocked = Task { try await redis.command(["BLPOP", "\(p)never", "30"]) }
        while redis.counters.outstanding == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (error, elapsed) = await measure { () -> RedisError? in
            _ = try? await killer.command(["CLIENT", "KILL", "ID", String(id)])
            return await redisError { try await blocked.value }
        }
        #expect(error == .unavailable("Redis closed the connection"))
        #expect(elapsed < .seconds(10), "at once, not when the 30 s BLPOP or the 40 s timeout would end (\(elapsed))")
        let again = try await redis.command(["CLIENT", "ID"]).integer ?? -1
        #expect(again != id && again > 0, "a new connection")
        #expect(redis.statistics.created == 1)
        await redis.close()
        await killer.close()
    }

    @Test func subscriberCommandsAreRefusedBeforeAnyIO() async throws {
        let redis = RedisClient(RedisConfiguration(host: "127.0.0.1", port: spareTCPPort()), logger: .init(minimum: .error))
        let error = await redisError { try await redis.command(["SUBSCRIBE", "news"]) }
        #expect(error.map { if case .invalidArgument = $0 { true } else { false } } == true)
        #expect(redis.statistics.created == 0, "no connection was opened")
        let empty = await redisError { try await redis.pipeline([["GET", "k"], [String]()]) }
        #expect(empty == .invalidArgument("empty command in pipeline"))
        await redis.close()
    }
}
