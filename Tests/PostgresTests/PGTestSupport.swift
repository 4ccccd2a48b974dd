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

    /// Ends the sessions running a statement that carries `marker` (a test's long holder, let go
    /// once the test has measured what it came for). Their session-level locks go with them.
    static func terminateSessions(running marker: String) async throws {
        let pool = try pool(maxConnections: 1)
        do {
            try await pool.withConnection { c in
                try c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                              [.text("%\(marker)%")])
            }
        } catch {
            await pool.close()
            throw error
        }
        await pool.close()
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
