import Dispatch
import Foundation
import Glibc
import Postgres
import RPC

/// A required environment variable is missing: the test fails with this message (never skips).
struct MissingEnvironment: Error, CustomStringConvertible {
    let name: String
    var description: String {
        "\(name) is not set. Run the tests through `make test`, or start throwaway servers with "
            + "`scripts/services temp swift test --filter PostgresTests`."
    }
}

enum PGTestEnv {
    static func require(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw MissingEnvironment(name: name)
        }
        return value
    }

    static func databaseURL() throws -> String { try require("DATABASE_URL") }

    /// A pool on `DATABASE_URL` (or `url`) with small, test-friendly limits.
    static func pool(url: String? = nil, maxConnections: Int = 4, acquireTimeout: Duration = .seconds(5),
                     statementTimeout: Duration = .seconds(10), clientMargin: Duration = .seconds(2),
                     connectTimeout: Duration = .seconds(2)) throws -> PGPool {
        var configuration = PGPoolConfiguration(url: try url ?? databaseURL())
        configuration.maxConnections = maxConnections
        configuration.acquireTimeout = acquireTimeout
        configuration.connection.statementTimeout = statementTimeout
        configuration.connection.clientTimeoutMargin = clientMargin
        configuration.connection.connectTimeout = connectTimeout
        return try PGPool(configuration, logger: Logger(minimum: .error))
    }

    /// A table/object name no other test (or run) uses.
    static func uniqueName(_ prefix: String) -> String {
        "t_\(prefix)_\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
    }
}

/// Elapsed wall time of `body`.
func measure<T>(_ body: () async throws -> T) async rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let value = try await body()
    return (value, ContinuousClock.now - start)
}

/// The `PGError` a call threw, or nil when it succeeded or threw something else.
func pgError<T>(_ body: () async throws -> T) async -> PGError? {
    do {
        _ = try await body()
        return nil
    } catch let error as PGError {
        return error
    } catch {
        return nil
    }
}

/// Runs a command off Swift's cooperative pool, waits, and returns its status and combined
/// output. (posix_spawn, not Foundation's `Process`: its `waitUntilExit` was seen to hang when the
/// command leaves a daemon behind, as `pg_ctl start` does.)
@discardableResult
func runCommand(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try spawnAndWait(executable, arguments) })
        }
    }
}

private func spawnAndWait(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let outputPath = "/tmp/pixtrack-cmd-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log"
    defer { unlink(outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    let env: [UnsafeMutablePointer<CChar>?] = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + env).forEach { free($0) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, env)
    guard rc == 0 else { throw CommandFailed(what: executable, output: String(cString: strerror(rc))) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    let exitCode = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (exitCode, output)
}

struct CommandFailed: Error, CustomStringConvertible {
    let what: String
    let output: String
    var description: String { "\(what) failed: \(output)" }
}

/// A TCP port nobody listens on right now (bound, read, released).
func spareTCPPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A TCP listener that accepts connections in the kernel backlog but never reads or answers.
final class BlackHoleListener {
    let port: Int
    private let fd: Int32

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok, listen(fd, 16) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }
}
