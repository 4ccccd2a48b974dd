import Testing
@testable import Postgres

@Suite struct PGMigratorTests {
    /// Three migrations on tables named after `prefix`; the second is slow so runs overlap.
    private func migrations(_ prefix: String) -> [PGMigration] {
        [
            PGMigration(version: 1, name: "create", sql: """
                CREATE TABLE \(prefix)_items (id int8 PRIMARY KEY);
                CREATE TABLE \(prefix)_log (version int8 NOT NULL);
                INSERT INTO \(prefix)_log VALUES (1);
                """),
            PGMigration(version: 2, name: "slow", sql: "SELECT pg_sleep(0.3); INSERT INTO \(prefix)_log VALUES (2);"),
            PGMigration(version: 3, name: "column", sql: """
                ALTER TABLE \(prefix)_items ADD COLUMN label text;
                INSERT INTO \(prefix)_log VALUES (3);
                """),
        ]
    }

    @Test func concurrentMigratorsApplyEachMigrationExactlyOnce() async throws {
        let prefix = PGTestEnv.uniqueName("mig")
        let table = "\(prefix)_schema"
        let poolA = try PGTestEnv.pool(maxConnections: 1)
        let poolB = try PGTestEnv.pool(maxConnections: 1)
        let list = migrations(prefix)
        async let a = PGMigrator(pool: poolA, migrations: list, table: table).migrate()
        async let b = PGMigrator(pool: poolB, migrations: list, table: table).migrate()
        let (appliedA, appliedB) = try await (a, b)
        #expect((appliedA + appliedB).sorted() == [1, 2, 3])
        let (log, recorded) = try await poolA.withConnection { c in
            (try c.query("SELECT version FROM \(prefix)_log ORDER BY version").map { try $0.int64("version") },
             try c.query("SELECT version, name, checksum, applied_at FROM \(table) ORDER BY version").map {
                 (try $0.int64("version"), try $0.string("name"), try $0.string("checksum")?.count, try $0.isNull("applied_at"))
             })
        }
        #expect(log == [1, 2, 3])
        #expect(recorded.map(\.0) == [1, 2, 3])
        #expect(recorded.map(\.1) == ["create", "slow", "column"])
        #expect(recorded.allSatisfy { $0.2 == 64 && !$0.3 })

        // A third run has nothing to do.
        #expect(try await PGMigrator(pool: poolA, migrations: list, table: table).migrate() == [])
        try await cleanUp(poolA, prefix: prefix, table: table)
        await poolA.close()
        await poolB.close()
    }

    @Test func aChangedMigrationIsAClearError() async throws {
        let prefix = PGTestEnv.uniqueName("migsum")
        let table = "\(prefix)_schema"
        let pool = try PGTestEnv.pool()
        var list = migrations(prefix)
        #expect(try await PGMigrator(pool: pool, migrations: list, table: table).migrate() == [1, 2, 3])
        list[1] = PGMigration(version: 2, name: "slow", sql: "SELECT 1; INSERT INTO \(prefix)_log VALUES (2);")
        let error = await pgError { try await PGMigrator(pool: pool, migrations: list, table: table).migrate() }
        #expect(error?.code == .migration)
        #expect(error?.message.contains("migration 2 (slow) was changed after it was applied") == true)
        try await cleanUp(pool, prefix: prefix, table: table)
        await pool.close()
    }

    @Test func aFailingMigrationRollsBackAndStopsThere() async throws {
        let prefix = PGTestEnv.uniqueName("migfail")
        let table = "\(prefix)_schema"
        let pool = try PGTestEnv.pool()
        var list = migrations(prefix)
        list[1] = PGMigration(version: 2, name: "broken", sql: "CREATE TABLE \(prefix)_partial (id int); SELECT 1/0;")
        let error = await pgError { try await PGMigrator(pool: pool, migrations: list, table: table).migrate() }
        #expect(error?.code == .migration)
        #expect(error?.sqlState == "22012")
        let (versions, partial) = try await pool.withConnection { c in
            (try c.query("SELECT version FROM \(table) ORDER BY version").map { try $0.int64("version") },
             try c.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text("\(prefix)_partial")]).first!.bool("present"))
        }
        #expect(versions == [1])
        #expect(partial == false)
        try await cleanUp(pool, prefix: prefix, table: table)
        await pool.close()
    }

    @Test func waitingForTheLockIsBoundedAndLeavesTheSessionAsItWas() async throws {
        let prefix = PGTestEnv.uniqueName("miglock")
        let table = "\(prefix)_schema"
        let holderPool = try PGTestEnv.pool(maxConnections: 1, statementTimeout: .seconds(40))
        let pool = try PGTestEnv.pool(maxConnections: 1, statementTimeout: .seconds(7))
        var migrator = PGMigrator(pool: pool, migrations: migrations(prefix), table: table)
        migrator.lockTimeout = .milliseconds(300)
        let key = migrator.lockKey
        // Holds the lock for up to 30 s; its session is ended (taking the lock with it) once the
        // wait is measured.
        let marker = PGTestEnv.uniqueName("lockholder")
        let holder = Task {
            try await holderPool.withConnection { c in
                try c.query("SELECT pg_advisory_lock($1)", [.int(key)])
                try c.query("SELECT pg_sleep(30) /* \(marker) */")
            }
        }
        // Wait until the holder really holds the lock (its connection can take a while to open
        // on a busy machine).
        while try await pool.withConnection({ c -> Bool in
            let free = try c.query("SELECT pg_try_advisory_lock($1) AS got", [.int(key)]).first?.bool("got") ?? false
            if free { _ = try c.query("SELECT pg_advisory_unlock($1)", [.int(key)]) }
            return free
        }) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let (error, elapsed) = await measure { await pgError { try await migrator.migrate() } }
        #expect(error?.code == .migration)
        #expect(error?.message.contains("migration lock") == true)
        #expect(elapsed < .seconds(10), "gave up at the 300 ms lock timeout, not when the 30 s holder let go (\(elapsed))")
        #expect(try await pool.withConnection { $0.statementTimeout } == .seconds(7))
        try await PGTestEnv.terminateSessions(running: marker)
        #expect(await pgError { try await holder.value } != nil, "the holder's session was ended")
        #expect(try await migrator.migrate() == [1, 2, 3])
        try await cleanUp(pool, prefix: prefix, table: table)
        await pool.close()
        await holderPool.close()
    }

    @Test func invalidMigrationListsAreRejected() async throws {
        let pool = try PGTestEnv.pool()
        let dup = [PGMigration(version: 1, name: "a", sql: "SELECT 1"), PGMigration(version: 1, name: "b", sql: "SELECT 1")]
        #expect(await pgError { try await PGMigrator(pool: pool, migrations: dup).migrate() }?.code == .migration)
        let badTable = await pgError { try await PGMigrator(pool: pool, migrations: [], table: "x; DROP").migrate() }
        #expect(badTable?.code == .migration)
        await pool.close()
    }

    private func cleanUp(_ pool: PGPool, prefix: String, table: String) async throws {
        try await pool.withConnection { c in
            try c.executeScript("DROP TABLE IF EXISTS \(prefix)_items, \(prefix)_log, \(prefix)_partial, \(table)")
        }
    }
}
