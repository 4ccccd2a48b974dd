import Glibc
import Testing
@testable import Postgres

private struct Boom: Error {}

/// `PGConnection.enqueue` inside `PGPool.transaction`: statements held back and sent, with BEGIN,
/// in one libpq pipeline with the next statement that needs an answer, or with the COMMIT.
@Suite struct PGPipelineTests {
    @Test func queuedStatementsGoOutWithTheNextStatementAndCommitTogether() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("pipe")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)") }
        let marker = PGTestEnv.uniqueName("app")
        let url = try PGTestEnv.databaseURL()

        let seen = try await pool.transaction { c -> [Int] in
            let observer = try PGConnection.connect(url: url)
            defer { observer.close() }
            func sessionsNamedMarker() throws -> Int {
                try observer.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1", [.text(marker)])
                    .first?.int("n") ?? -1
            }
            #expect(c.queuedCount == 1, "BEGIN waits for the first statement")
            try c.enqueue("INSERT INTO \(table) VALUES (1)")
            try c.enqueue("SELECT set_config('application_name', $1, false)", [.text(marker)])
            let before = try sessionsNamedMarker()
            // The next statement that needs an answer takes the queue with it, in order.
            let rows = try c.query("SELECT count(*) AS n FROM \(table)")
            #expect(try rows.first?.int("n") == 1, "the queued INSERT ran before this SELECT, in the same transaction")
            #expect(c.queuedCount == 0)
            let after = try sessionsNamedMarker()
            try c.enqueue("INSERT INTO \(table) VALUES (2)")
            return [before, after]
        }
        #expect(seen == [0, 1], "nothing was sent until a statement needed an answer")
        // The last INSERT went out with the COMMIT.
        let ids = try await pool.withConnection { c in try c.query("SELECT id FROM \(table) ORDER BY id").map { try $0.int64("id") } }
        #expect(ids == [1, 2])
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func aQueuedStatementThatFailsFailsTheTransactionAndNothingAfterItRuns() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let table = PGTestEnv.uniqueName("pipe")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)") }
        try await pool.transaction { c in try c.execute("INSERT INTO \(table) VALUES (1)") }

        // Failing at the COMMIT: the duplicate's own error, not a generic one.
        let atCommit = await pgError {
            try await pool.transaction { c in
                try c.enqueue("INSERT INTO \(table) VALUES (10)")
                try c.enqueue("INSERT INTO \(table) VALUES (1)")
                try c.enqueue("INSERT INTO \(table) VALUES (11)")
            }
        }
        #expect(atCommit?.code == .constraintViolation)
        #expect(atCommit?.constraint == "\(table)_pkey")

        // Failing at a later query: that query throws the queued statement's error and never runs.
        let atQuery = await pgError {
            try await pool.transaction { c throws -> Int in
                try c.enqueue("INSERT INTO \(table) VALUES (1)")
                return try c.execute("INSERT INTO \(table) VALUES (12)")
            }
        }
        #expect(atQuery?.code == .constraintViolation)

        let ids = try await pool.withConnection { c in try c.query("SELECT id FROM \(table) ORDER BY id").map { try $0.int64("id") } }
        #expect(ids == [1], "both transactions rolled back whole")
        // The connection was left idle and fit for the next transaction.
        let idle = try await pool.withConnection { $0.isIdle && $0.isUsable }
        #expect(idle)
        try await pool.transaction { c in try c.enqueue("INSERT INTO \(table) VALUES (2)") }
        #expect(pool.statistics.created == 1, "one connection throughout: no failure above dropped it")
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func aBodyThatThrowsNeverSendsWhatItQueued() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let table = PGTestEnv.uniqueName("pipe")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)") }
        await #expect(throws: Boom.self) {
            try await pool.transaction { c in
                try c.enqueue("INSERT INTO \(table) VALUES (7)")
                throw Boom()
            }
        }
        let (count, idle) = try await pool.withConnection { c in
            (try c.query("SELECT count(*) AS n FROM \(table)").first?.int("n"), c.isIdle)
        }
        #expect(count == 0)
        #expect(idle)
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func outsideATransactionEnqueueRunsAtOnce() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("pipe")
        let queued = try await pool.withConnection { c throws -> Int in
            try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)")
            try c.enqueue("INSERT INTO \(table) VALUES (1)")
            return c.queuedCount
        }
        #expect(queued == 0)
        let count = try await pool.withConnection { c in try c.query("SELECT count(*) AS n FROM \(table)").first?.int("n") }
        #expect(count == 1)
        // A NUL byte is refused at enqueue, before anything is sent.
        let refused = await pgError { try await pool.transaction { c in try c.enqueue("SELECT $1::text", [.text("a\u{0}b")]) } }
        #expect(refused?.code == .invalidArgument)
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func theQueueIsBoundedAndALongRunIsSentInParts() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("pipe")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY, pad text)") }
        let pad = String(repeating: "x", count: 4000)  // ~1 MB in all: more than a socket buffer
        let most = try await pool.transaction { c throws -> Int in
            var most = 0
            for i in 0..<250 {
                try c.enqueue("INSERT INTO \(table) VALUES ($1, $2)", [.int(Int64(i)), .text(pad)])
                most = max(most, c.queuedCount)
            }
            return most
        }
        #expect(most <= PGConnection.maxQueued)
        let count = try await pool.withConnection { c in try c.query("SELECT count(*) AS n FROM \(table)").first?.int("n") }
        #expect(count == 250)
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func aBackendEndedBeforeThePipelineGoesOutIsUnavailableAndTheNextCallReconnects() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let url = try PGTestEnv.databaseURL()
        let error = await pgError {
            try await pool.transaction { c in
                let pid = try c.query("SELECT pg_backend_pid() AS p").first!.int64("p")!
                try c.enqueue("SELECT 1")
                let killer = try PGConnection.connect(url: url)
                defer { killer.close() }
                try killer.query("SELECT pg_terminate_backend($1::int)", [.int(pid)])
                // Wait until the backend is gone, so the pipeline meets a closed connection.
                for _ in 0..<200 {
                    let alive = try killer.query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1::int", [.int(pid)]).first?.int("n")
                    if alive == 0 { break }
                    usleep(10_000)
                }
                try c.enqueue("SELECT 2")
                _ = try c.query("SELECT 3")
            }
        }
        #expect(error?.code == .unavailable)
        let n = try await pool.withConnection { try $0.query("SELECT 41 + 1 AS n").first?.int64("n") }
        #expect(n == 42, "the broken connection was dropped and a new one opened")
        await pool.close()
    }

    @Test func aPipelineToAServerThatStopsAnsweringHitsTheClientDeadline() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1, statementTimeout: .milliseconds(300), clientMargin: .milliseconds(300))
        let pid = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p")! }
        #expect(kill(pid_t(pid), SIGSTOP) == 0)
        defer { kill(pid_t(pid), SIGCONT) }
        let (error, elapsed) = await measure {
            await pgError { try await pool.transaction { c in try c.enqueue("SELECT 1"); _ = try c.query("SELECT 2") } }
        }
        kill(pid_t(pid), SIGCONT)
        #expect(error?.code == .timeout)
        #expect(elapsed >= .milliseconds(550) && elapsed < .seconds(20), "the 600 ms deadline (\(elapsed))")
        let newPid = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p")! }
        #expect(newPid != pid, "the stuck connection was dropped")
        await pool.close()
    }
}

/// The per-connection prepared-statement cache behind `query`/`execute`/`enqueue`.
@Suite struct PGPreparedStatementTests {
    @Test func aStatementIsPreparedOncePerConnectionAndTypesMakeAnother() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let (before, afterRepeats, afterOtherTypes, listed) = try await pool.withConnection { c in
            let before = c.preparedCount
            for i in 0..<5 { #expect(try c.query("SELECT $1::int8 + 1 AS n", [.int(Int64(i))]).first?.int64("n") == Int64(i + 1)) }
            let afterRepeats = c.preparedCount
            // The same text with a NULL (type left to the server) is another statement.
            #expect(try c.query("SELECT $1::int8 + 1 AS n", [nil]).first?.int64("n") == nil)
            let afterOtherTypes = c.preparedCount
            // The session's own prepared statements, as the server lists them.
            let listed = try c.query("SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'pixtrack\\_%'").first?.int("n")
            return (before, afterRepeats, afterOtherTypes, listed)
        }
        #expect(afterRepeats == before + 1)
        #expect(afterOtherTypes == afterRepeats + 1)
        #expect(listed == afterOtherTypes + 1, "the server holds what the cache says (+1: the listing query itself)")
        await pool.close()
    }

    @Test func aPreparedStatementOutlivesARolledBackTransactionAndAFailedOneIsNotKept() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let table = PGTestEnv.uniqueName("prep")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)") }
        struct Boom: Error {}
        let insert = "INSERT INTO \(table) VALUES ($1)"
        await #expect(throws: Boom.self) {
            try await pool.transaction { c in
                try c.execute(insert, [.int(1)])
                throw Boom()
            }
        }
        let (count, prepared) = try await pool.withConnection { c throws -> (Int?, Int) in
            let n = c.preparedCount
            try c.execute(insert, [.int(2)])  // prepared inside the rolled-back transaction: still there
            #expect(c.preparedCount == n, "no second prepare for the same text")
            // A statement the server refuses is not kept, and the connection goes on.
            #expect(throws: PGError.self) { try c.query("SELEC 1") }
            #expect(c.preparedCount == n)
            return (try c.query("SELECT count(*) AS n FROM \(table)").first?.int("n"), c.preparedCount)
        }
        #expect(count == 1)
        #expect(prepared >= 2)
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func pastTheCapStatementsRunUnnamed() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let most = try await pool.withConnection { c throws -> Int in
            for i in 0..<(PGConnection.maxPrepared + 20) {
                #expect(try c.query("SELECT \(i)::int8 + $1::int8 AS n", [.int(1)]).first?.int64("n") == Int64(i + 1))
            }
            return c.preparedCount
        }
        #expect(most == PGConnection.maxPrepared)
        await pool.close()
    }

    @Test func aTextMadeUpPerCallCanStayUnnamed() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let (before, after) = try await pool.withConnection { c throws -> (Int, Int) in
            let before = c.preparedCount
            for i in 1...5 {
                let values = (1...i).map { "($\($0)::int8)" }.joined(separator: ", ")
                let rows = try c.query("SELECT count(*) AS n FROM (VALUES \(values)) v", (1...i).map { .int(Int64($0)) }, prepare: false)
                #expect(try rows.first?.int("n") == i)
            }
            return (before, c.preparedCount)
        }
        #expect(after == before)
        await pool.close()
    }

    @Test func aTableRecreatedUnderAPreparedStatementIsFoundAgain() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        let table = PGTestEnv.uniqueName("prep")
        let select = "SELECT count(*) AS n FROM \(table) WHERE id > $1"
        let counts = try await pool.withConnection { c throws -> [Int?] in
            try c.execute("CREATE TABLE \(table) (id int8)")
            try c.execute("INSERT INTO \(table) VALUES (1), (2)")
            let first = try c.query(select, [.int(0)]).first?.int("n")
            try c.execute("DROP TABLE \(table)")
            try c.execute("CREATE TABLE \(table) (id int8, extra text)")
            try c.execute("INSERT INTO \(table) VALUES (5, 'x')")
            let second = try c.query(select, [.int(0)]).first?.int("n")
            try c.execute("DROP TABLE \(table)")
            return [first, second]
        }
        #expect(counts == [2, 1])
        await pool.close()
    }
}
