import Testing
import SystemTestSupport
@testable import Redis

/// Redis down, unreachable or silent: typed errors within the timeouts, never a hang, and
/// recovery without help.
@Suite struct RedisFailureTests {
    @Test func downRedisFailsFastAndTheClientReconnectsByItself() async throws {
        try await PrivateRedis.with { try await downAndUp($0) }
    }

    private func downAndUp(_ server: PrivateRedis) async throws {
        var configuration = try RedisConfiguration(url: server.url)
        configuration.poolSize = 2
        configuration.commandTimeout = .seconds(30)
        configuration.connectTimeout = .seconds(30)
        configuration.reconnectBackoff = .milliseconds(100)
        let redis = RedisClient(configuration, logger: .init(minimum: .error))
        try await redis.set("k", "before", ttlSeconds: 60)

        // A restart while a connection sits idle: the first call afterwards already works.
        try await server.stop()
        try await server.start()
        #expect(try await redis.get("k") == nil, "fresh server (no persistence), reached on the first try")

        try await server.stop()
        for attempt in 0..<5 {
            let (error, elapsed) = await measure { await redisError { try await redis.set("k", "while down") } }
            guard case .unavailable? = error else {
                Issue.record("attempt \(attempt): expected .unavailable, got \(String(describing: error))")
                return
            }
            #expect(elapsed < .seconds(10), "well before the 30 s timeouts: attempt \(attempt) took \(elapsed)")
        }
        let pingDown = await redisError { try await redis.ping() }
        #expect(pingDown?.rpcError.code == .unavailable)

        try await server.start()
        let (recovered, after) = try await waitForPing(redis)
        #expect(recovered, "reconnected after Redis came back")
        #expect(after < .seconds(10), "soon after the 100 ms backoff, not after a 30 s timeout (\(after))")
        try await redis.set("k", "after", ttlSeconds: 60)
        #expect(try await redis.getString("k") == "after")
        await redis.close()
    }

    @Test func aBlackHoleTimesOutWithinTheCommandTimeout() async throws {
        let hole = try BlackHoleListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: hole.port)
        configuration.commandTimeout = .milliseconds(300)
        let redis = RedisClient(configuration, logger: .init(minimum: .error))
        for _ in 0..<2 {
            let (error, elapsed) = await measure { await redisError { try await redis.ping() } }
            guard case .timeout? = error else {
                Issue.record("expected .timeout, got \(String(describing: error))")
                return
            }
            #expect(elapsed >= .milliseconds(280) && elapsed < .seconds(15), "the 300 ms command timeout; the hole never answers (\(elapsed))")
        }
        let pipelined = await redisError { try await redis.pipeline([["SET", "a", "1"], ["SET", "b", "2"]]) }
        #expect(pipelined.map { if case .timeout = $0 { true } else { false } } == true)
        await redis.close()
    }

    @Test func aClosedPortIsUnavailableAtOnce() async throws {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: spareTCPPort())
        configuration.reconnectBackoff = .zero
        configuration.connectTimeout = .seconds(30)
        let redis = RedisClient(configuration, logger: .init(minimum: .error))
        let (error, elapsed) = await measure { await redisError { try await redis.ping() } }
        guard case .unavailable? = error else {
            Issue.record("expected .unavailable, got \(String(describing: error))")
            return
        }
        #expect(elapsed < .seconds(10), "refused at once, not after the 30 s connect timeout (\(elapsed))")
        await redis.close()
        let closed = await redisError { try await redis.ping() }
        #expect(closed.map { if case .unavailable = $0 { true } else { false } } == true)
    }
}

/// No server needed.
@Suite struct RedisConfigurationTests {
    @Test func parsesURLs() throws {
        let plain = try RedisConfiguration(url: "redis://127.0.0.1:6380/2")
        #expect(plain.host == "127.0.0.1" && plain.port == 6380 && plain.database == 2 && plain.password == nil)
        let defaults = try RedisConfiguration(url: "redis://cache")
        #expect(defaults.host == "cache" && defaults.port == 6379 && defaults.database == 0)
        let auth = try RedisConfiguration(url: "redis://:s3cret@h:1/0")
        #expect(auth.password == "s3cret" && auth.username == nil)
        let acl = try RedisConfiguration(url: "redis://app:p%40ss@[::1]:7000/3")
        #expect(acl.username == "app" && acl.password == "p@ss" && acl.host == "::1" && acl.port == 7000 && acl.database == 3)
        #expect(!acl.description.contains("p@ss"))
        for bad in ["http://h", "redis://", "redis://h:0", "redis://h:99999", "redis://h/x", "redis://:%zz@h"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }

    @Test func timeoutsRoundUpToWholeMilliseconds() {
        #expect(Duration.milliseconds(300).redisMilliseconds == 300)
        #expect(Duration.microseconds(1).redisMilliseconds == 1)
        #expect(Duration.zero.redisMilliseconds == 1)
        #expect(Duration.seconds(2).redisMilliseconds == 2000)
    }

    @Test func errorsMapToStatuses() {
        #expect(RedisError.timeout("x").rpcError.code == .unavailable)
        #expect(RedisError.server("ERR x").rpcError.code == .internal)
        #expect(RedisError.timeout("x").breaksConnection)
        #expect(!RedisError.server("x").breaksConnection)
        #expect(RedisError.server(reply: "ERR unknown command 'FOO', with args beginning with: 'secret-key' ")
            == .server("ERR unknown command 'FOO'"))
        #expect(RedisError.server(reply: "WRONGTYPE Operation against a key") == .server("WRONGTYPE Operation against a key"))
    }
}
