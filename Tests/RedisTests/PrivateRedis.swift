import Foundation
import Glibc
import SystemTestSupport

/// A throwaway Redis owned by one test (so it can be shut down and started again on the same
/// port), started the way `scripts/services` does.
final class PrivateRedis {
    let port: Int
    let dir: String
    private let server: String
    private let cli: String

    /// PEM files for a TLS-only server (`rediss://`): its certificate, key and the CA that signed it.
    struct TLSFiles {
        let certificate: String
        let key: String
        let ca: String
    }

    private var tls: TLSFiles?

    var url: String { tls == nil ? "redis://127.0.0.1:\(port)/0" : "rediss://127.0.0.1:\(port)/0" }

    private init() throws {
        server = try executablePath("redis-server")
        cli = try executablePath("redis-cli")
        var template = Array("/tmp/pixtrack-redistest.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        dir = String(cString: made)
        port = spareTCPPort()
    }

    /// With `tls`, the server listens with TLS only (no plaintext port) and does not ask
    /// clients for certificates.
    static func launch(tls: TLSFiles? = nil) async throws -> PrivateRedis {
        let redis = try PrivateRedis()
        redis.tls = tls
        do {
            try await redis.start()
        } catch {
            await redis.destroy()
            throw error
        }
        return redis
    }

    /// Runs `body` with a fresh server (TLS-only with `tls`), destroyed afterwards whatever happens.
    static func with(tls: TLSFiles? = nil, _ body: (PrivateRedis) async throws -> Void) async throws {
        let server = try await launch(tls: tls)
        do {
            try await body(server)
        } catch {
            await server.destroy()
            throw error
        }
        await server.destroy()
    }

    /// Starts (again) on the same port and waits until it answers PING.
    func start() async throws {
        var listen = ["--port", String(port)]
        if let tls {
            listen = ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certificate, "--tls-key-file", tls.key,
                      "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no"]
        }
        let result = try await runCommand(server, listen + [
            "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile", "\(dir)/redis.pid",
            "--dir", dir, "--logfile", "\(dir)/redis.log", "--save", "", "--appendonly", "no",
        ])
        guard result.status == 0 else { throw CommandFailed(what: "redis-server", output: result.output) }
        for _ in 0..<100 {
            if try await runCommand(cli, cliArguments + ["ping"]).output.contains("PONG") { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CommandFailed(what: "redis-server", output: "no PONG on port \(port)")
    }

    /// `redis-cli shutdown nosave`, then waits until the port refuses connections.
    func stop() async throws {
        _ = try await runCommand(cli, cliArguments + ["shutdown", "nosave"])
        for _ in 0..<100 {
            if try await runCommand(cli, cliArguments + ["ping"]).output.contains("PONG") == false { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CommandFailed(what: "redis shutdown", output: "still answering on port \(port)")
    }

    private var cliArguments: [String] {
        ["-p", String(port)] + (tls.map { ["--tls", "--cacert", $0.ca] } ?? [])
    }

    func destroy() async {
        _ = try? await runCommand(cli, cliArguments + ["shutdown", "nosave"])
        try? FileManager.default.removeItem(atPath: dir)
    }
}
