import Glibc
import Testing
@testable import Postgres

private struct Boom: Error {}

@Suite struct PGPoolTests {
    @Test func transactionCommitsOrRollsBackOnThrow() async throws {
        let pool = try PGTestEnv.pool()
        let table = PGTestEnv.uniqueName("tx")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (id int8 PRIMARY KEY)") }

        try await pool.transaction { c in try c.execute("INSERT INTO \(table) VALUES (1)") }
        await #expect(throws: Boom.self) {
            try await pool.transaction { c in
                try c.execute("INSERT INTO \(table) VALUES (2)")
                throw Boom()
            }
        }
        // A failed statement swallowed inside the body: COMMIT turns into ROLLBACK, reported.
        let aborted = await pgError {
            try await pool.transaction { c in
                try c.execute("INSERT INTO \(table) VALUES (3)")
                _ = try? c.execute("INSERT INTO \(table) VALUES (1)")
            }
        }
        #expect(aborted?.code == .queryFailed)
        let ids = try await pool.withConnection { c in
            try c.query("SELECT id FROM \(table) ORDER BY id").map { try $0.int64("id") }
        }
        #expect(ids == [1])
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func aTransactionLeftOpenIsRolledBackBeforeReuse() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1)
        try await pool.withConnection { c in try c.execute("BEGIN") }
        let idle = try await pool.withConnection { $0.isIdle }
        #expect(idle)
        await pool.close()
    }

    @Test func exhaustedPoolWaitsThenTimesOutClearly() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1, acquireTimeout: .milliseconds(300), statementTimeout: .seconds(40))
        // Holds the only connection for up to 30 s; it is ended once the wait is measured.
        let marker = PGTestEnv.uniqueName("holder")
        let holder = Task { try await pool.withConnection { try $0.query("SELECT pg_sleep(30) /* \(marker) */") } }
        // Wait until the holder really has the only connection (it can start late on a busy machine).
        while pool.statistics.created == 0 || pool.statistics.idle > 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (error, elapsed) = await measure { await pgError { try await pool.ping() } }
        #expect(error?.code == .poolTimeout)
        #expect(error?.rpcError.code == .unavailable)
        #expect(elapsed >= .milliseconds(280) && elapsed < .seconds(10), "at the 300 ms acquire timeout, not when the 30 s holder ends (\(elapsed))")
        #expect(pool.statistics.created == 1)
        try await PGTestEnv.terminateSessions(running: marker)
        #expect(await pgError { try await holder.value } != nil, "the holder's session was ended")
        await pool.close()
    }

    @Test func aWaiterGetsTheConnectionWhenItIsReleased() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1, acquireTimeout: .seconds(5))
        let holder = Task { try await pool.withConnection { try $0.query("SELECT pg_sleep(0.4)") } }
        while pool.statistics.created == 0 || pool.statistics.idle > 0 { try await Task.sleep(for: .milliseconds(10)) }
        let (value, elapsed) = try await measure { try await pool.withConnection { try $0.query("SELECT 7 AS n").first?.int64("n") } }
        #expect(value == 7)
        #expect(elapsed >= .milliseconds(200), "waited for the holder (\(elapsed))")
        _ = try await holder.value
        await pool.close()
    }

    @Test func waitingForAConnectionHonoursCancellation() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 1, acquireTimeout: .seconds(10))
        let holder = Task { try await pool.withConnection { try $0.query("SELECT pg_sleep(1)") } }
        try await Task.sleep(for: .milliseconds(100))
        let start = ContinuousClock.now
        let waiter = Task { try await pool.ping() }
        try await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        let result = await waiter.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(ContinuousClock.now - start < .milliseconds(900), "well before the holder's 1 s")
        #expect(pool.statistics.waiting == 0)
        _ = try await holder.value
        await pool.close()
    }

    @Test func fiftyConcurrentTasksShareFiveConnections() async throws {
        let pool = try PGTestEnv.pool(maxConnections: 5, acquireTimeout: .seconds(20))
        let table = PGTestEnv.uniqueName("fifty")
        try await pool.withConnection { c in try c.execute("CREATE TABLE \(table) (task int8 PRIMARY KEY, pid int8)") }
        let pids = try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<50 {
                group.addTask {
                    try await pool.transaction { c in
                        let pid = try c.query("SELECT pg_backend_pid() AS p").first!.int64("p")!
                        try c.execute("INSERT INTO \(table) VALUES ($1, $2)", [.int(i), .int(pid)])
                        try c.query("SELECT pg_sleep(0.01)")
                        return pid
                    }
                }
            }
            var all: [Int64] = []
            for try await pid in group { all.append(pid) }
            return all
        }
        #expect(pids.count == 50)
        #expect(Set(pids).count <= 5)
        let count = try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM \(table)").first?.int64("n") }
        #expect(count == 50)
        #expect(pool.statistics.created <= 5)
        try await pool.withConnection { c in try c.execute("DROP TABLE \(table)") }
        await pool.close()
    }

    @Test func closedPoolRefusesWork() async throws {
        let pool = try PGTestEnv.pool()
        try await pool.ping()
        await pool.close()
        let error = await pgError { try await pool.ping() }
        #expect(error?.code == .poolClosed)
    }

    @Test func invalidURLIsRejectedWithoutEchoingIt() throws {
        #expect {
            _ = try PGPool(PGPoolConfiguration(url: "postgresql://u:s3cret@host:notaport/db?bogus_option=1"))
        } throws: { error in
            let pg = error as? PGError
            return pg?.code == .invalidArgument && pg?.description.contains("s3cret") == false
        }
        var configuration = PGPoolConfiguration(url: "postgresql://u:s3cret@h/db")
        configuration.maxConnections = 3
        #expect(!configuration.description.contains("s3cret"))
    }

    /// A private server (it gets stopped): a restart is survived without a failed call, and
    /// while it is down calls fail fast with `.unavailable`.
    @Test func reconnectsAfterTheServerRestarts() async throws {
        let server = try await PrivatePostgres.launch()
        do {
            try await restartScenario(server)
        } catch {
            await server.destroy()
            throw error
        }
        await server.destroy()
    }

    private func restartScenario(_ server: PrivatePostgres) async throws {
        let pool = try PGTestEnv.pool(url: server.url, maxConnections: 2, connectTimeout: .seconds(30))
        let before = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p") }

        try await server.restart()
        let after = try await pool.withConnection { try $0.query("SELECT pg_backend_pid() AS p").first!.int64("p") }
        #expect(after != nil && after != before, "first call after the restart works on a new connection")

        try await server.stop()
        for _ in 0..<3 {
            let (error, elapsed) = await measure { await pgError { try await pool.ping() } }
            #expect(error?.code == .unavailable)
            #expect(elapsed < .seconds(10), "down server fails fast, not after the 30 s connect timeout (\(elapsed))")
        }
        try await server.start()
        try await pool.ping()
        let n = try await pool.withConnection { try $0.query("SELECT 41 + $1::int8 AS n", [.int(1)]).first?.int64("n") }
        #expect(n == 42)
        await pool.close()
    }
}
