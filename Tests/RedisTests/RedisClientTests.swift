import Testing
@testable import Redis

/// Commands against the shared test server (`REDIS_URL`); each test uses its own key prefix.
@Suite struct RedisClientTests {
    @Test func repliesAreCopiedIntoSwiftValues() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("replies")
        let binary = (0...255).map { UInt8($0) }
        try await redis.set("\(p)bin", binary)
        #expect(try await redis.get("\(p)bin") == binary)
        try await redis.set("\(p)text", "ação 🚀 'quoted' \"double\"")
        #expect(try await redis.getString("\(p)text") == "ação 🚀 'quoted' \"double\"")
        #expect(try await redis.get("\(p)missing") == nil)
        #expect(try await redis.command(["INCRBY", "\(p)n", "41"]) == .integer(41))
        #expect(try await redis.command(["INCR", "\(p)n"]).integer == 42)
        try await redis.command(["RPUSH", "\(p)list", "a", "", "c"])
        #expect(try await redis.command(["LRANGE", "\(p)list", "0", "-1"]) == .array([.bulk(Array("a".utf8)), .bulk([]), .bulk(Array("c".utf8))]))
        #expect(try await redis.command(["SET", "\(p)s", "v"]) == .status("OK"))
        try await redis.ping()
        try await redis.command(["DEL", "\(p)bin", "\(p)text", "\(p)n", "\(p)list", "\(p)s"])
        await redis.close()
    }

    @Test func errorRepliesThrowServerErrors() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("errors")
        try await redis.set("\(p)word", "not-a-number")
        let notInteger = await redisError { try await redis.command(["INCR", "\(p)word"]) }
        guard case .server(let message)? = notInteger else {
            Issue.record("expected .server, got \(String(describing: notInteger))")
            return
        }
        #expect(message.hasPrefix("ERR"))
        let wrongType = await redisError { try await redis.command(["LPUSH", "\(p)word", "x"]) }
        #expect(wrongType.map { "\($0)" }?.contains("WRONGTYPE") == true)
        // The connection survives an error reply.
        #expect(try await redis.getString("\(p)word") == "not-a-number")
        #expect(redis.statistics.created == 1)
        try await redis.command(["DEL", "\(p)word"])
        await redis.close()
    }

    @Test func setWithTTLExpires() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("ttl")
        try await redis.set("\(p)a", "v", ttlSeconds: 30)
        let ttl = try await redis.command(["TTL", "\(p)a"]).integer
        #expect(ttl.map { (1...30).contains($0) } == true)
        try await redis.set("\(p)short", "v", ttlSeconds: 1)
        try await Task.sleep(for: .milliseconds(1_200))
        #expect(try await redis.get("\(p)short") == nil)
        let bad = await redisError { try await redis.set("\(p)b", "v", ttlSeconds: 0) }
        #expect(bad == .invalidArgument("TTL must be at least 1 second"))
        try await redis.command(["DEL", "\(p)a"])
        await redis.close()
    }

    @Test func pipelineWritesSeveralKeysInOneRoundTrip() async throws {
        let redis = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("pipe")
        let token = "0123456789abcdef0123456789abcdef"
        try await redis.set([(key: "\(p)tracking:\(token)", value: Array("{\"fbclid\":\"x\"}".utf8)),
                             (key: "\(p)tracking:fbclid:x", value: Array(token.utf8))], ttlSeconds: 604_800)
        let replies = try await redis.pipeline([
            ["GET", "\(p)tracking:fbclid:x"],
            ["TTL", "\(p)tracking:\(token)"],
            ["INCR", "\(p)tracking:\(token)"],          // an error reply stays in place
            ["MGET", "\(p)tracking:\(token)", "\(p)nothing"],
        ])
        #expect(replies.count == 4)
        #expect(replies[0].string == token)
        #expect(replies[1].integer.map { $0 > 604_000 && $0 <= 604_800 } == true)
        #expect(replies[2].errorMessage?.hasPrefix("ERR") == true)
        #expect(replies[3] == .array([.bulk(Array("{\"fbclid\":\"x\"}".utf8)), .null]))
        #expect(try await redis.pipeline([[String]]()) == [])
        try await redis.command(["DEL", "\(p)tracking:\(token)", "\(p)tracking:fbclid:x"])
        await redis.close()
    }

    @Test func fiftyConcurrentTasksShareTheConnections() async throws {
        let redis = try RedisTestEnv.client { $0.poolSize = 4; $0.acquireTimeout = .seconds(10) }
        let p = RedisTestEnv.uniquePrefix("fifty")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<50 {
                group.addTask {
                    try await redis.command(["INCR", "\(p)counter"])
                    try await redis.set("\(p)k\(i)", "v\(i)", ttlSeconds: 60)
                    #expect(try await redis.getString("\(p)k\(i)") == "v\(i)")
                }
            }
            try await group.waitForAll()
        }
        #expect(try await redis.command(["GET", "\(p)counter"]).integer == 50)
        #expect(redis.statistics.created <= 4)
        try await redis.command(["DEL", "\(p)counter"] + (0..<50).map { "\(p)k\($0)" })
        await redis.close()
    }

    @Test func selectsTheDatabaseFromTheURL() async throws {
        let base = try RedisConfiguration(url: RedisTestEnv.redisURL())
        let db0 = try RedisClient(url: "redis://\(base.host):\(base.port)/0")
        let db3 = try RedisClient(url: "redis://\(base.host):\(base.port)/3")
        let key = RedisTestEnv.uniquePrefix("select") + "k"
        try await db3.set(key, "in three", ttlSeconds: 60)
        #expect(try await db3.getString(key) == "in three")
        #expect(try await db0.getString(key) == nil)
        try await db3.command(["DEL", key])
        await db0.close()
        await db3.close()
    }

    @Test func wrongCredentialsAreAServerErrorThatHidesThePassword() async throws {
        let base = try RedisConfiguration(url: RedisTestEnv.redisURL())
        let redis = try RedisClient(url: "redis://:hunter2-secret@\(base.host):\(base.port)/0", logger: .init(minimum: .error))
        let error = await redisError { try await redis.ping() }
        guard case .server? = error else {
            Issue.record("expected .server, got \(String(describing: error))")
            return
        }
        #expect(error?.description.contains("hunter2") == false)
        await redis.close()
    }

    @Test func exhaustedPoolTimesOutClearly() async throws {
        let redis = try RedisTestEnv.client { $0.poolSize = 1; $0.acquireTimeout = .milliseconds(200); $0.commandTimeout = .seconds(40) }
        let pusher = try RedisTestEnv.client()
        let p = RedisTestEnv.uniquePrefix("busy")
        // Holds the only connection for up to 30 s; the push below lets it go once measured.
        let holder = Task { try await redis.command(["BLPOP", "\(p)held", "30"]) }
        // Wait until the holder really has the only connection (it can start late on a busy machine).
        while redis.statistics.created == 0 || redis.statistics.idle > 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (error, elapsed) = await measure { await redisError { try await redis.ping() } }
        guard case .timeout? = error else {
            Issue.record("expected .timeout, got \(String(describing: error))")
            return
        }
        #expect(elapsed >= .milliseconds(180) && elapsed < .seconds(10), "at the 200 ms acquire timeout, not when the 30 s holder ends (\(elapsed))")
        try await pusher.command(["LPUSH", "\(p)held", "go"])
        #expect(try await holder.value == .array([.bulk(Array("\(p)held".utf8)), .bulk(Array("go".utf8))]))
        await pusher.close()
        await redis.close()
    }
}
