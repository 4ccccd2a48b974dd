import Testing
import SystemTestSupport
@testable import Redis

/// Calls sent at once and awaited later (`startPipeline`, `startSet`), against `REDIS_URL`: what
/// a click does while it waits for PostgreSQL. Each outcome a caller can meet: the replies
/// already there, still on their way, never awaited, cancelled, refused, Redis down, closed.
@Suite struct RedisStartedCallTests {
    @Test func repliesThatCameFirstAreReturnedAndRepliesStillComingAreAwaited() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("started")
        let set = redis.startSet([(key: Array("\(p)a".utf8), value: Array("1".utf8)), (key: Array("\(p)b".utf8), value: Array("2".utf8))],
                                 ttlSeconds: 60)
        try await Task.sleep(for: .milliseconds(200))  // the replies are back by now: no wait in done()
        try await set.done()
        #expect(try await redis.getString("\(p)a") == "1" && redis.statistics.created >= 1)
        let ttl = try await redis.command(["TTL", "\(p)b"]).integer
        #expect(ttl.map { (1...60).contains($0) } == true)

        // Keys in two pieces, text and byte values, written straight into the command bytes.
        try await redis.startSet(ttlSeconds: 60) { batch in
            batch.set(key: "test:", "\(p)ação", value: "texto ✓")
            batch.set(key: "test:", "\(p)bytes", value: [0, 13, 10, 255])
        }.done()
        #expect(try await redis.getString("test:\(p)ação") == "texto ✓")
        #expect(try await redis.get("test:\(p)bytes") == [0, 13, 10, 255])

        // A blocking command holds its reply back: value() suspends until it comes.
        let (replies, elapsed) = try await measure {
            try await redis.startPipeline([["BLPOP", "\(p)empty", "0.3"].map { Array($0.utf8) }]).value()
        }
        #expect(replies == [.null] && elapsed >= .milliseconds(250), "\(replies) after \(elapsed)")

        // Error replies stay in place, as for `pipeline`; `done()` of a SET batch throws them.
        let mixed = try await redis.startPipeline([["SET", "\(p)w", "word"], ["INCR", "\(p)w"]].map { $0.map { Array($0.utf8) } }).value()
        #expect(mixed.count == 2 && mixed[0] == .status("OK") && mixed[1].errorMessage?.hasPrefix("ERR") == true)
        try await redis.command(["DEL", "\(p)a", "\(p)b", "\(p)w", "test:\(p)ação", "test:\(p)bytes"])
        await redis.close()
    }

    @Test func aCallNeverAwaitedIsStillWrittenAndLeavesTheClientWorking() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("dropped")
        for i in 0..<200 { _ = redis.startSet([(key: Array("\(p)\(i)".utf8), value: Array("v".utf8))], ttlSeconds: 60) }
        // Commands on one connection are answered in order: once this is back, all 200 are.
        #expect(try await redis.command(["PING"]) == .status("PONG"))
        #expect(try await redis.command(["EXISTS", "\(p)0", "\(p)199"]).integer == 2)
        #expect(redis.counters.outstanding == 0)
        try await redis.command(["DEL"] + (0..<200).map { "\(p)\($0)" })
        await redis.close()
    }

    @Test func aTaskCancelledWhileAwaitingReturnsAtOnceAndTheConnectionStaysUsable() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("cancelled")
        let waiter = Task {
            try await redis.startPipeline([["BLPOP", "\(p)never", "5"].map { Array($0.utf8) }]).value()
        }
        try await Task.sleep(for: .milliseconds(150))
        let (outcome, elapsed) = await measure { () async -> Result<[RedisReply], any Error> in
            waiter.cancel()
            return await waiter.result
        }
        guard case .failure(let error) = outcome, error is CancellationError else {
            Issue.record("expected CancellationError, got \(outcome)")
            return
        }
        #expect(elapsed < .seconds(4), "cancelled at once, not after the 5 s BLPOP (\(elapsed))")
        // Already cancelled before it awaits: CancellationError without waiting either.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await redis.startPipeline([["BLPOP", "\(p)never2", "5"].map { Array($0.utf8) }]).value()
        }
        let (second, elapsed2) = await measure { await early.result }
        #expect((try? second.get()) == nil && elapsed2 < .seconds(4))
        #expect(try await redis.command(["PING"]) == .status("PONG"))
        await redis.close()
    }

    @Test func refusedCommandsDownAndClosedClientsFailThroughValue() async throws {
        let redis = try RedisTestEnv.client()
        let refused = await redisError { try await redis.startPipeline([["SUBSCRIBE", "x"].map { Array($0.utf8) }]).value() }
        #expect(refused == .invalidArgument("subscriber and replication commands are not supported"))
        let empty = await redisError { try await redis.startPipeline([]).value() }
        #expect(empty == .invalidArgument("empty pipeline"))
        let badTTL = await redisError { try await redis.startSet([(key: [0x61], value: [0x62])], ttlSeconds: 0).done() }
        #expect(badTTL == .invalidArgument("TTL must be at least 1 second"))
        #expect(redis.statistics.created == 0, "nothing refused was sent")
        try await redis.startSet([], ttlSeconds: 5).done()  // nothing to write is done at once
        await redis.close()
        let closed = await redisError { try await redis.startSet([(key: [0x61], value: [0x62])]).done() }
        #expect(closed.map { if case .unavailable = $0 { true } else { false } } == true)

        var configuration = RedisConfiguration(host: "127.0.0.1", port: spareTCPPort())
        configuration.reconnectBackoff = .zero
        let down = RedisClient(configuration, logger: .init(minimum: .error))
        let (error, elapsed) = await measure { await redisError { try await down.startSet([(key: [0x61], value: [0x62])]).done() } }
        #expect(error.map { if case .unavailable = $0 { true } else { false } } == true && elapsed < .seconds(10), "\(String(describing: error))")
        await down.close()
    }
}
