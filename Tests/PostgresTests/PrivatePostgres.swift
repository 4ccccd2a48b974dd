import Foundation
import Glibc
import SystemTestSupport

/// A throwaway PostgreSQL cluster owned by one test (to stop and restart it), built with the
/// binaries in `PIXTRACK_TEST_PG_BIN` the way `scripts/services` does: as root, the server runs
/// as `postgres` via runuser and owns the folder.
final class PrivatePostgres {
    let bin: String
    let dir: String
    /// Chosen free before the server binds it; `launch` takes another if someone took it meanwhile.
    private(set) var port: Int

    var url: String { "postgresql://postgres@127.0.0.1:\(port)/postgres" }
    /// ssl=on with these files (copied into the cluster's folder, key mode 0600 as PostgreSQL demands).
    private var tls: TestCertificates?

    private init() throws {
        bin = try PGTestEnv.require("PIXTRACK_TEST_PG_BIN")
        var template = Array("/tmp/pixtrack-pgtest.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
        dir = String(cString: made)
        port = spareTCPPort()
        chmod(dir, 0o755)
        try FileManager.default.createDirectory(atPath: "\(dir)/sock", withIntermediateDirectories: true)
    }

    /// Creates the cluster and starts it on a spare port; with `tls`, it also accepts TLS.
    static func launch(tls: TestCertificates? = nil) async throws -> PrivatePostgres {
        let server = try PrivatePostgres()
        server.tls = tls
        do {
            if let tls {
                try FileManager.default.copyItem(atPath: tls.certificate, toPath: "\(server.dir)/server.crt")
                try FileManager.default.copyItem(atPath: tls.key, toPath: "\(server.dir)/server.key")
                chmod("\(server.dir)/server.key", 0o600)
            }
            if geteuid() == 0 {
                try check(await runCommand("/usr/bin/chown", ["-R", "postgres:", server.dir]), "chown")
            }
            try check(await server.asPostgres("\(server.bin)/initdb", ["-D", "\(server.dir)/data", "--auth=trust",
                                                                      "-U", "postgres", "--encoding=UTF8", "--no-locale", "--no-sync"]), "initdb")
            // The port was free when chosen, but another test's server may bind it first:
            // then the start fails on it and a fresh port is tried (other failures are thrown,
            // with the server's log).
            for attempt in 1... {
                do {
                    try await server.start()
                    break
                } catch is CommandFailed where attempt < 3 && server.logTail.contains("could not bind") {
                    server.port = spareTCPPort()
                }
            }
        } catch {
            await server.destroy()
            throw error
        }
        return server
    }

    func start() async throws {
        let result = try await asPostgres("\(bin)/pg_ctl", ["-D", "\(dir)/data", "-l", "\(dir)/postgres.log", "-w", "-t", "30",
                                                           "-o", options, "start"])
        guard result.status == 0 else { throw CommandFailed(what: "pg_ctl start", output: result.output + "\nserver log:\n" + logTail) }
    }

    /// The end of the server's log (why a start failed).
    var logTail: String {
        let log = (try? String(contentsOfFile: "\(dir)/postgres.log", encoding: .utf8)) ?? ""
        return String(log.suffix(2000))
    }

    func stop() async throws {
        try Self.check(await asPostgres("\(bin)/pg_ctl", ["-D", "\(dir)/data", "-m", "fast", "-w", "-t", "30", "stop"]), "pg_ctl stop")
    }

    func restart() async throws {
        try Self.check(await asPostgres("\(bin)/pg_ctl", ["-D", "\(dir)/data", "-l", "\(dir)/postgres.log", "-m", "fast", "-w",
                                               "-t", "30", "-o", options, "restart"]), "pg_ctl restart")
    }

    /// Stops the server (immediately) and deletes the folder.
    func destroy() async {
        _ = try? await asPostgres("\(bin)/pg_ctl", ["-D", "\(dir)/data", "-m", "immediate", "-w", "-t", "30", "stop"])
        try? FileManager.default.removeItem(atPath: dir)
    }

    private var options: String {
        "-p \(port) -k \(dir)/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
            + (tls == nil ? "" : " -c ssl=on -c ssl_cert_file=\(dir)/server.crt -c ssl_key_file=\(dir)/server.key")
    }

    private func asPostgres(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        if geteuid() == 0 {
            return try await runCommand("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        }
        return try await runCommand(executable, arguments)
    }

    private static func check(_ result: (status: Int32, output: String), _ what: String) throws {
        guard result.status == 0 else { throw CommandFailed(what: what, output: result.output) }
    }
}

