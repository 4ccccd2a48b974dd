import Testing
import SystemTestSupport
@testable import Redis

/// rediss:// against a real TLS-only redis-server: commands and pipelines larger than a socket
/// buffer through the tunnel, the certificate and host name checked, a plaintext server named,
/// and reconnection after a restart.
@Suite(.serialized) struct RedisTLSTests {
    static func configuration(_ server: PrivateRedis, host: String, ca: String?) throws -> RedisConfiguration {
        var c = try RedisConfiguration(url: "rediss://\(host):\(server.port)/0")
        c.caFile = ca
        c.poolSize = 2
        c.connectTimeout = .seconds(5)
        c.commandTimeout = .seconds(5)
        c.reconnectBackoff = .milliseconds(50)
        return c
    }

    /// Runs `body` with a fresh server (TLS-only with `certs`), destroyed afterwards.
    static func withRedis(_ certs: TestCertificates?, _ body: (PrivateRedis) async throws -> Void) async throws {
        try await PrivateRedis.with(tls: certs.map { .init(certificate: $0.certificate, key: $0.key, ca: $0.ca) }, body)
    }

    @Test func commandsAndLargePipelinesGoThroughTheTunnel() async throws {
        let certs = try TestCertificates(names: ["localhost"])
        try await Self.withRedis(certs) { server in
            var config = try Self.configuration(server, host: "localhost", ca: certs.ca)
            // Megabytes through the TLS pump of a debug build on a loaded machine: no deadline
            // is under test here, so the command timeout is generous (it failed once at 5 s).
            config.commandTimeout = .seconds(30)
            #expect(config.tls && config.description.contains("tls: on"))
            let redis = RedisClient(config, logger: .init(minimum: .error))
            try await redis.set("tls:k", "v", ttlSeconds: 60)
            #expect(try await redis.getString("tls:k") == "v")
            // 3 MiB one way and back: several times any socket buffer and TLS record.
            let big = String(repeating: "0123456789abcdef", count: 3 << 16)
            try await redis.set("tls:big", big, ttlSeconds: 60)
            #expect(try await redis.getString("tls:big") == big)
            // A pipeline whose commands and replies both exceed the socket pair's buffers.
            // The blocking connection runs on a thread of its own, never on the cooperative pool.
            let (replies, gets) = try await onThread { [config] in
                let connection = try RedisConnection.connect(config)
                defer { connection.close() }
                let commands = (0..<3000).map { i in ["SET", "tls:p\(i)", String(repeating: "x", count: 200)].map { Array($0.utf8) } }
                let replies = try connection.pipeline(commands)
                return (replies, try connection.pipeline((0..<3000).map { ["GET", "tls:p\($0)"].map { Array($0.utf8) } }))
            }
            #expect(replies.count == 3000 && replies.allSatisfy { if case .status("OK") = $0 { true } else { false } })
            #expect(gets.allSatisfy { if case .bulk(let b) = $0 { b.count == 200 } else { false } })
            await redis.close()
        }
    }

    @Test func theCertificateAndTheNameAreChecked() async throws {
        let certs = try TestCertificates(names: ["localhost"])
        try await Self.withRedis(certs) { server in
            for (host, ca, expected) in [("localhost", certs.otherCA, "certificate not trusted"),
                                         ("localhost", nil, "certificate not trusted"),
                                         ("127.0.0.1", certs.ca, "IP address mismatch")] {
                do {
                    let config = try Self.configuration(server, host: host, ca: ca)
                    try await onThread { try RedisConnection.connect(config).close() }
                    Issue.record("\(host) with \(ca ?? "the system CAs") was accepted")
                } catch let error as RedisError {
                    guard case .unavailable(let message) = error else { Issue.record("\(error)"); continue }
                    #expect(message.contains(expected), "\(message)")
                }
        }
        }
    }

    @Test func aPlaintextServerIsNamedAndARestartIsSurvived() async throws {
        try await Self.withRedis(nil) { plain in
            // A plaintext Redis waits for a command line the ClientHello never completes.
            var config = try Self.configuration(plain, host: "127.0.0.1", ca: nil)
            config.connectTimeout = .milliseconds(500)
            do {
                try await onThread { [config] in try RedisConnection.connect(config).close() }
                Issue.record("TLS to a plaintext Redis went through")
            } catch let error as RedisError {
                #expect(String(describing: error).contains("does the server speak TLS on this port?"), "\(error)")
            }
        }
        let certs = try TestCertificates()
        try await Self.withRedis(certs) { server in
            let redis = RedisClient(try Self.configuration(server, host: "127.0.0.1", ca: certs.ca), logger: .init(minimum: .error))
            try await redis.set("tls:r", "before", ttlSeconds: 60)
            try await server.stop()
            try await server.start()
            #expect(try await waitForPing(redis).recovered, "reconnected over TLS after the restart")
            try await redis.set("tls:r", "after", ttlSeconds: 60)
            #expect(try await redis.getString("tls:r") == "after")
            await redis.close()
        }
    }
}
