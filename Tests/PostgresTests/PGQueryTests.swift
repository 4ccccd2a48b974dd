import Testing
@testable import Postgres

/// Statements against the shared test server (`DATABASE_URL`); each test uses its own tables.
@Suite struct PGQueryTests {
    @Test func oddCharactersTravelAsParametersUntouched() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("odd")
        let samples = ["'; DROP TABLE \(table); --", "\"double\" 'single' `back`", "back\\slash \\x00",
                       "ação 🚀 中文 עברית", "", "$1 $2 ?", "line\nbreak\ttab"]
        let echoed = try await pool.withConnection { c in
            try c.execute("CREATE TABLE \(table) (id serial PRIMARY KEY, v text)")
            for s in samples { try c.execute("INSERT INTO \(table) (v) VALUES ($1)", [.text(s)]) }
            try c.execute("INSERT INTO \(table) (v) VALUES ($1)", [nil])
            let rows = try c.query("SELECT v FROM \(table) ORDER BY id")
            return try rows.map { try $0.string("v") }
        }
        #expect(echoed == samples.map { Optional($0) } + [nil])
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func nulInTextIsRejectedBeforeSendingAndTheConnectionStaysUsable() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let error = await pgError { try await pool.withConnection { try $0.query("SELECT $1::text", ["a\u{0}b"]) } }
        #expect(error?.code == .invalidArgument)
        #expect(error?.description.contains("$1") == true)
        #expect(error?.description.contains("NUL") == true)
        let sqlError = await pgError { try await pool.withConnection { try $0.query("SELECT 1\u{0}") } }
        #expect(sqlError?.code == .invalidArgument)
        // Found anywhere, in long texts too (a batch INSERT's text runs to kilobytes).
        let long = String(repeating: "é", count: 5000)
        let lateParam = await pgError { try await pool.withConnection { try $0.query("SELECT $1::text", [.text(long + "\u{0}")]) } }
        #expect(lateParam?.code == .invalidArgument)
        let lateSQL = await pgError { try await pool.withConnection { try $0.query("SELECT '\(long)'\u{0}") } }
        #expect(lateSQL?.code == .invalidArgument)
        let one = try await pool.withConnection { try $0.query("SELECT 1 AS one").first?.int64("one") }
        #expect(one == 1)
        await pool.close()
    }

    @Test func typedGettersRoundTrip() async throws {
        let pool = try PGTestEnv.pool()
        let allBytes = (0...255).map { UInt8($0) }
        let row = try await pool.withConnection { c in
            try c.query("""
                SELECT $1::int8 AS big, $2::int8 AS small, $3::bool AS yes, $4::bool AS no, $5::bytea AS blob,
                       $6::float8 AS d, NULL::int8 AS nothing, '\\x'::bytea AS empty,
                       extract(epoch FROM '2024-05-01T12:00:00Z'::timestamptz)::int8 AS epoch,
                       to_char('2024-05-01T12:00:00Z'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS iso
                """, [.int(Int64.max), .int(Int64.min), true, false, .bytes(allBytes), .double(19.9)]).first!
        }
        #expect(try row.int64("big") == Int64.max)
        #expect(try row.int64("small") == Int64.min)
        #expect(try row.bool("yes") == true)
        #expect(try row.bool("no") == false)
        #expect(try row.bytes("blob") == allBytes)
        #expect(try row.bytes("empty") == [])
        #expect(try row.double("d") == 19.9)
        #expect(try row.int64("nothing") == nil)
        #expect(try row.isNull("nothing"))
        #expect(try row.int64("epoch") == 1_714_564_800)
        #expect(try row.string("iso") == "2024-05-01T12:00:00Z")
        #expect(throws: PGError.self) { try row.int64("yes") }
        #expect(throws: PGError.self) { try row.string("no_such_column") }
        #expect(row.columns.names.first == "big")
        await pool.close()
    }

    @Test func executeReturnsAffectedRows() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("affected")
        let (inserted, updated, deleted) = try await pool.withConnection { c in
            try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, n int8 NOT NULL)")
            let inserted = try c.execute("INSERT INTO \(table) SELECT g, 0 FROM generate_series(1, 5) g")
            let updated = try c.execute("UPDATE \(table) SET n = n + 1 WHERE id > $1", [.int(2)])
            let deleted = try c.execute("DELETE FROM \(table) WHERE id = $1", [.int(99)])
            try c.execute("DROP TABLE \(table)")
            return (inserted, updated, deleted)
        }
        #expect(inserted == 5)
        #expect(updated == 3)
        #expect(deleted == 0)
        await pool.close()
    }

    @Test func constraintViolationsMapToTheTypedError() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("constraint")
        try await pool.withConnection { c in
            try c.execute("CREATE TABLE \(table) (email text CONSTRAINT \(table)_email_key UNIQUE NOT NULL, n int CHECK (n > 0))")
            try c.execute("INSERT INTO \(table) VALUES ($1, 1)", ["buyer@example.com"])
        }
        let unique = await pgError {
            try await pool.withConnection { try $0.execute("INSERT INTO \(table) VALUES ($1, 1)", ["buyer@example.com"]) }
        }
        #expect(unique?.code == .constraintViolation)
        #expect(unique?.sqlState == "23505")
        #expect(unique?.constraint == "\(table)_email_key")
        #expect(unique?.description.contains("buyer@example.com") == false)
        #expect(unique?.rpcError.code == .alreadyExists)
        let notNull = await pgError { try await pool.withConnection { try $0.execute("INSERT INTO \(table) VALUES ($1, 1)", [nil]) } }
        #expect(notNull?.code == .constraintViolation)
        #expect(notNull?.sqlState == "23502")
        let check = await pgError { try await pool.withConnection { try $0.execute("INSERT INTO \(table) VALUES ('x', $1)", [.int(-1)]) } }
        #expect(check?.sqlState == "23514")
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func descriptionsNeverCarryParametersSQLOrCredentials() async throws {
        let pool = try PGTestEnv.pool()
        let bad = await pgError { try await pool.withConnection { try $0.query("SELECT $1::int8", ["secret-value-42"]) } }
        #expect(bad?.code == .queryFailed)
        #expect(bad?.sqlState == "22P02")
        #expect(bad?.description.contains("secret-value-42") == false)
        #expect(bad?.serverMessage?.contains("secret-value-42") == true, "kept apart for debugging")
        let syntax = await pgError { try await pool.withConnection { try $0.query("SELEC password FROM users") } }
        #expect(syntax?.sqlState == "42601")
        #expect(syntax?.description.contains("password") == false)
        await pool.close()

        let closed = spareTCPPort()
        let unreachable = try PGTestEnv.pool(url: "postgresql://pixuser:hunter2-secret@127.0.0.1:\(closed)/db")
        let down = await pgError { try await unreachable.ping() }
        #expect(down?.code == .unavailable)
        #expect(down?.description.contains("hunter2") == false)
        #expect(down?.description.contains("pixuser") == false)
        #expect(down?.rpcError.code == .unavailable)
        await unreachable.close()
    }

    @Test func statementTimeoutIsATypedTimeoutAndTheConnectionSurvives() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1, statementTimeout: .milliseconds(200))
        let (error, elapsed) = await measure { await pgError { try await pool.withConnection { try $0.query("SELECT pg_sleep(60)") } } }
        #expect(error?.code == .timeout)
        #expect(error?.sqlState == "57014")
        #expect(elapsed < .seconds(20), "the 200 ms statement timeout, not the 60 s sleep (\(elapsed))")
        let pids = try await pool.withConnection { c in
            (try c.query("SELECT pg_backend_pid() AS p").first?.int64("p"), c.statementTimeout)
        }
        #expect(pids.0 != nil)
        #expect(pids.1 == .milliseconds(200))
        await pool.close()
    }

    @Test func aServerThatStopsAnsweringHitsTheClientDeadline() async throws {
        // SIGSTOP our own backend: the server-side statement_timeout cannot fire, the client deadline must.
        let pool = try PGTestEnv.pool(maxConnections: 1, statementTimeout: .milliseconds(300), clientMargin: .milliseconds(300))
        let pid = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p")! }
        #expect(kill(pid_t(pid), SIGSTOP) == 0)
        defer { kill(pid_t(pid), SIGCONT) }
        let (error, elapsed) = await measure { await pgError { try await pool.withConnection { try $0.query("SELECT 1") } } }
        kill(pid_t(pid), SIGCONT)
        #expect(error?.code == .timeout)
        #expect(elapsed >= .milliseconds(550) && elapsed < .seconds(20), "the 600 ms deadline; the stopped server never answers (\(elapsed))")
        // The stuck connection was dropped; the next call gets a fresh one.
        let newPid = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p")! }
        #expect(newPid != pid)
        await pool.close()
    }

    @Test func connectingToABlackHoleTimesOut() async throws {
        let hole = try BlackHoleListener()
        let pool = try PGTestEnv.pool(url: "postgresql://postgres@127.0.0.1:\(hole.port)/x", connectTimeout: .seconds(2))
        let (error, elapsed) = await measure { await pgError { try await pool.ping() } }
        #expect(error?.code == .unavailable)
        #expect(elapsed >= .milliseconds(1900) && elapsed < .seconds(20), "the 2 s connect timeout; the hole never answers (\(elapsed))")
        await pool.close()
    }
}

import Glibc
import SystemTestSupport
