import Dispatch
import Foundation
import Glibc
import Testing
import SystemTestSupport
@testable import Redis

/// `RedisConnection` used directly, the way a `RedisClient` job uses it (blocking, one thread).
@Suite struct RedisConnectionTests {
    /// Writing to a socket the server closed raises SIGPIPE, which kills a process that does not
    /// ignore it (the test process does not). The shim must absorb it.
    @Test func aKilledConnectionFailsTypedInsteadOfKillingTheProcess() async throws {
        var old = sigaction()
        sigaction(SIGPIPE, nil, &old)
        let ignored = unsafeBitCast(old.__sigaction_handler.sa_handler, to: Int.self) == 1
        let configuration = try RedisConfiguration(url: RedisTestEnv.redisURL())
        let outcome: Result<RedisReply, any Error> = await onThread {
            Result {
                let victim = try RedisConnection.connect(configuration)
                let killer = try RedisConnection.connect(configuration)
                let id = try victim.command(["CLIENT", "ID"]).integer ?? -1
                _ = try killer.command(["CLIENT", "KILL", "ID", String(id)])
                usleep(100_000) // let the FIN arrive
                // Larger than the socket buffer: the first write draws an RST, the next gets EPIPE.
                return try victim.command([Array("SET".utf8), Array("k".utf8), [UInt8](repeating: 0x61, count: 8 << 20)])
            }
        }
        guard case .failure(let error) = outcome, case .unavailable? = error as? RedisError else {
            Issue.record("expected RedisError.unavailable, got \(outcome)")
            return
        }
        #expect(!ignored, "SIGPIPE was already ignored: this run did not exercise the guard")
    }

    @Test func commandsAfterAFailureSayTheConnectionIsClosed() async throws {
        let hole = try BlackHoleListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: hole.port)
        configuration.commandTimeout = .milliseconds(100)
        let settings = configuration
        let (first, second): (RedisError?, RedisError?) = await onThread {
            guard let connection = try? RedisConnection.connect(settings) else { return (nil, nil) }
            let first = Result { try connection.command(["PING"]) }
            let second = Result { try connection.command(["PING"]) }
            return (Self.redisError(first), Self.redisError(second))
        }
        #expect(first == .timeout("no answer from Redis within the command timeout"))
        #expect(second == .unavailable("connection is closed"))
    }

    private static func redisError(_ result: Result<RedisReply, any Error>) -> RedisError? {
        if case .failure(let e) = result { return e as? RedisError }
        return nil
    }
}
