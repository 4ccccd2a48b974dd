import RPC

/// One versioned schema change. `sql` may hold several statements; it runs inside a transaction
/// of its own, so it must not contain `BEGIN`/`COMMIT` or statements that refuse a transaction
/// block (`CREATE INDEX CONCURRENTLY`, `VACUUM`).
public struct PGMigration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Applies migrations at startup, safely when several instances start together.
///
/// Under a session `pg_advisory_lock` (key derived from the table name) it creates the
/// migrations table if needed, checks that every migration already applied still has the same
/// SHA-256 checksum, and applies the missing ones in version order, each in its own transaction
/// together with its row in the migrations table (`version`, `name`, `checksum`, `applied_at`).
public struct PGMigrator: Sendable {
    public let migrations: [PGMigration]
    /// The bookkeeping table (`schema_migrations`); a plain lowercase identifier.
    public let table: String
    /// How long to wait for another instance's migration run to finish.
    public var lockTimeout: Duration = .seconds(60)
    /// The `statement_timeout` while migrating (`.zero`: none).
    public var statementTimeout: Duration = .seconds(300)
    private let pool: PGPool
    private let logger: Logger

    public init(pool: PGPool, migrations: [PGMigration], table: String = "schema_migrations", logger: Logger = Logger()) {
        self.pool = pool
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.table = table
        self.logger = logger
    }

    /// The advisory lock key: FNV-1a of the table name, so the key is stable across processes.
    public var lockKey: Int64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in "pixtrack.migrations.\(table)".utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int64(bitPattern: h)
    }

    /// Applies what is missing and returns the versions this call applied (empty when the
    /// schema was up to date).
    /// - Throws: `PGError` `.migration` for an invalid list, a changed migration, a lock wait
    ///   past `lockTimeout` or a failing migration (its `sqlState` kept); `.unavailable` etc.
    public func migrate() async throws -> [Int] {
        try validate()
        let (migrations, table, key) = (self.migrations, self.table, self.lockKey)
        let (lockTimeout, statementTimeout, logger) = (self.lockTimeout, self.statementTimeout, self.logger)
        return try await pool.withConnection { connection in
            let original = connection.statementTimeout
            do {
                try connection.setStatementTimeout(lockTimeout)
                try connection.query("SELECT pg_advisory_lock($1)", [.int(key)])
            } catch let error as PGError {
                if (try? connection.setStatementTimeout(original)) == nil { connection.close() }
                guard error.code == .timeout else { throw error }
                throw PGError(.migration, "timed out waiting for the migration lock (another instance migrating?)")
            }
            defer {
                // A pooled session must never keep the lock (it would block every later
                // migration run): if unlocking or restoring the timeout fails, drop the session.
                let unlocked = try? connection.query("SELECT pg_advisory_unlock($1) AS ok", [.int(key)]).first?.bool("ok")
                if unlocked != true || (try? connection.setStatementTimeout(original)) == nil { connection.close() }
            }
            try connection.setStatementTimeout(statementTimeout)
            return try Self.applyLocked(migrations, table: table, connection, logger)
        }
    }

    private func validate() throws {
        guard Self.isPlainIdentifier(table) else {
            throw PGError(.migration, "migrations table name must be a lowercase identifier")
        }
        var previous = 0
        for m in migrations {
            guard m.version > 0 else { throw PGError(.migration, "migration versions must be positive (got \(m.version))") }
            guard m.version != previous else { throw PGError(.migration, "migration version \(m.version) appears twice") }
            previous = m.version
        }
    }

    /// Runs with the advisory lock held, on the pool connection's thread.
    private static func applyLocked(_ migrations: [PGMigration], table: String, _ connection: PGConnection,
                                    _ logger: Logger) throws -> [Int] {
        try connection.executeScript("""
            CREATE TABLE IF NOT EXISTS \(table) (
                version    bigint      PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        var applied: [Int64: (name: String, checksum: String)] = [:]
        for row in try connection.query("SELECT version, name, checksum FROM \(table)") {
            if let v = try row.int64("version") {
                applied[v] = (try row.string("name") ?? "", try row.string("checksum") ?? "")
            }
        }
        var done: [Int] = []
        for m in migrations {
            let checksum = try Self.checksum(m.sql, connection)
            if let existing = applied[Int64(m.version)] {
                guard existing.checksum == checksum else {
                    throw PGError(.migration, "migration \(m.version) (\(m.name)) was changed after it was applied: "
                        + "checksum \(checksum.prefix(12))… differs from the recorded \(existing.checksum.prefix(12))…")
                }
                continue
            }
            try connection.execute("BEGIN")
            do {
                try connection.executeScript(m.sql)
                try connection.execute("INSERT INTO \(table) (version, name, checksum) VALUES ($1, $2, $3)",
                                       [.int(m.version), .text(m.name), .text(checksum)])
                try connection.execute("COMMIT")
            } catch let error as PGError {
                if connection.isUsable { _ = try? connection.execute("ROLLBACK") }
                var wrapped = PGError(.migration, "migration \(m.version) (\(m.name)) failed: \(error.message)",
                                      sqlState: error.sqlState, serverMessage: error.serverMessage)
                if error.code == .unavailable { wrapped.code = .unavailable }
                throw wrapped
            }
            logger.info("pg_migration_applied", ("version", String(m.version)), ("name", m.name))
            done.append(m.version)
        }
        let known = Set(migrations.map { Int64($0.version) })
        for v in applied.keys where !known.contains(v) {
            logger.warning("pg_migration_unknown", ("version", String(v)), ("note", "applied by a newer build?"))
        }
        return done
    }

    /// SHA-256 (hex) of the migration's UTF-8 text, computed by the server.
    private static func checksum(_ sql: String, _ connection: PGConnection) throws -> String {
        let rows = try connection.query("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') AS sum", [.text(sql)])
        guard let sum = try rows.first?.string("sum") else { throw PGError(.migration, "could not compute a checksum") }
        return sum
    }

    static func isPlainIdentifier(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count), !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(u[0]) else { return false }
        return u.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_") }
    }
}
