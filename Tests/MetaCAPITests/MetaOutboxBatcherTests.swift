import Foundation
import Testing
@testable import MetaCAPI
import Postgres
import RPC

/// Group commit of outbox inserts against the real PostgreSQL (`DATABASE_URL`), each test in its
/// own schema. A table lock taken from a second connection holds batches in flight, so tests
/// decide which requests end up in the same batch.
@Suite struct MetaOutboxBatcherTests {
    /// A fresh schema with a migrated outbox: its URL (for a lock-holding connection) and a pool.
    /// `lockTimeoutMs`: lock waits fail after that long (a slow statement on a loaded machine
    /// does not).
    static func isolated(statementTimeout: Duration = .seconds(10), lockTimeoutMs: Int? = nil) async throws -> (url: String, pool: PGPool, poolURL: String) {
        let base = try MetaTestEnv.databaseURL()
        let schema = "mb_\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
        let admin = try PGPool(PGPoolConfiguration(url: base), logger: Logger(minimum: .error))
        try await admin.withConnection { try $0.execute("CREATE SCHEMA \(schema)") }
        await admin.close()
        let url = base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
        // Migrated without the lock timeout: the migration lock is shared with the other suites.
        let migrating = try PGPool(PGPoolConfiguration(url: url), logger: Logger(minimum: .error))
        _ = try await PGMigrator(pool: migrating, migrations: MetaMigrations.all, logger: Logger(minimum: .error)).migrate()
        await migrating.close()
        let poolURL = url + (lockTimeoutMs.map { "%20-clock_timeout%3D\($0)" } ?? "")
        var config = PGPoolConfiguration(url: poolURL)
        config.maxConnections = 4
        config.connection.statementTimeout = statementTimeout
        return (url, try PGPool(config, logger: Logger(minimum: .error)), poolURL)
    }

    /// A batcher on `pool`, or (`pipelined`) on a `PGPipelineLoop` to the same database with the
    /// same settings: every test runs on both paths.
    static func batcher(pool: PGPool, url: String, pipelined: Bool, maxInFlight: Int = 1) throws -> MetaOutboxBatcher {
        guard pipelined else { return MetaOutboxBatcher(pool: pool, maxInFlight: maxInFlight) }
        var configuration = PGPipelineLoop.Configuration(url: url)
        configuration.connection.statementTimeout = .seconds(10)  // as `isolated` gives the pool
        return MetaOutboxBatcher(pool: pool, pipeline: try PGPipelineLoop(configuration, logger: Logger(minimum: .error)), maxInFlight: maxInFlight)
    }

    static func close(_ batcher: MetaOutboxBatcher, _ pool: PGPool) async {
        await batcher.pipeline?.close()
        await pool.close()
    }

    /// Holds `ACCESS EXCLUSIVE` on the outbox until `commit()`: inserts wait behind it.
    static func lockOutbox(_ url: String) throws -> PGConnection {
        let c = try PGConnection.connect(url: url)
        try c.execute("BEGIN")
        try c.execute("LOCK TABLE meta_events IN ACCESS EXCLUSIVE MODE")
        return c
    }

    static func rows(_ pool: PGPool) async throws -> Int {
        try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM meta_events").first?.int("n") ?? -1 }
    }

    /// Waits until the batcher's counters satisfy `condition` (5 s at most).
    static func until(_ batcher: MetaOutboxBatcher, _ condition: (MetaOutboxBatcher.Statistics) -> Bool) async throws {
        for _ in 0..<1000 {
            if condition(batcher.statistics) { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("batcher never reached the expected state: \(batcher.statistics)")
    }

    @Test(arguments: [false, true]) func concurrentEnqueuesShareCommits(pipelined: Bool) async throws {
        let (_, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let inserted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<500 { group.addTask { try await batcher.enqueue(testEvent("c\(i)")) } }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(inserted == 500)
        #expect(try await Self.rows(pool) == 500)
        let stats = batcher.statistics
        #expect(stats.events == 500 && stats.failedBatches == 0 && stats.pending == 0 && stats.inFlight == 0)
        #expect(stats.batches < 500, "500 requests took \(stats.batches) commits")
        await Self.close(batcher, pool)
    }

    @Test(arguments: [false, true]) func firstRequestGoesAloneWhenIdle(pipelined: Bool) async throws {
        let (_, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        #expect(try await batcher.enqueue(testEvent("solo")))
        #expect(batcher.statistics.batches == 1)
        #expect(try await Self.rows(pool) == 1)
        await Self.close(batcher, pool)
    }

    @Test(arguments: [false, true]) func duplicatesKeepTheFirst(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined, maxInFlight: 2)  // two writers: two blockers at once
        #expect(try await batcher.enqueue(testEvent("old")))
        #expect(try await batcher.enqueue(testEvent("old")) == false)   // already queued

        // Two writers held by the lock; then "dup" twice (different event_time) and "old" pend
        // behind them and form one batch, in arrival order.
        let lock = try Self.lockOutbox(url)
        let blockers = [Task { try await batcher.enqueue(testEvent("b1")) }, Task { try await batcher.enqueue(testEvent("b2")) }]
        try await Self.until(batcher) { $0.inFlight == 2 }
        var pending: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("dup", time: 1_000), testEvent("dup", time: 2_000), testEvent("old")].enumerated() {
            pending.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        try lock.execute("COMMIT")
        for b in blockers { #expect(try await b.value) }
        #expect(try await pending[0].value == true)
        #expect(try await pending[1].value == false)
        #expect(try await pending[2].value == false)
        let stats = batcher.statistics
        #expect(stats.batches == 5 && stats.events == 7)   // 2 alone, 2 blockers, 1 batch of 3
        // Pipelined: the repeat of "old" failed its plain INSERT and was written again keeping
        // the queued row; the batches after it went with ON CONFLICT at once.
        #expect(stats.conflictRetries == (pipelined ? 1 : 0))
        let time = try await pool.withConnection {
            try $0.query("SELECT event_time FROM meta_events WHERE event_id = 'dup'").first?.int("event_time")
        }
        #expect(time == 1_000)
        #expect(try await Self.rows(pool) == 4)
        await Self.close(batcher, pool)
    }

    /// A batch whose candidates are all new (the INSERT's count alone decides): a repeat inside
    /// the batch is still answered "not new", and the first of it "new".
    @Test(arguments: [false, true]) func aRepeatInsideABatchOfNewEventsIsNotNew(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined, maxInFlight: 1)
        let lock = try Self.lockOutbox(url)
        let blocker = Task { try await batcher.enqueue(testEvent("blocker")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        var pending: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("x", time: 1_000), testEvent("x", time: 2_000), testEvent("y")].enumerated() {
            pending.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        try lock.execute("COMMIT")
        #expect(try await blocker.value)
        #expect(try await pending[0].value == true)
        #expect(try await pending[1].value == false)
        #expect(try await pending[2].value == true)
        #expect(batcher.statistics.batches == 2 && batcher.statistics.events == 4)
        #expect(try await Self.rows(pool) == 3)
        await Self.close(batcher, pool)
    }

    @Test(arguments: [false, true]) func failedBatchFailsEveryWaiterThenTheNextBatchWorks(pipelined: Bool) async throws {
        // The batches fail on the lock held below (lock_timeout), not on a statement timeout
        // that a slow insert on a loaded machine could hit after the lock is gone.
        let (url, pool, poolURL) = try await Self.isolated(lockTimeoutMs: 300)
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let lock = try Self.lockOutbox(url)
        let outcomes = await withTaskGroup(of: PGError.Code?.self) { group in
            for i in 0..<40 {
                group.addTask {
                    do {
                        _ = try await batcher.enqueue(testEvent("f\(i)"))
                        return nil
                    } catch let e as PGError {
                        return e.code
                    } catch {
                        return .queryFailed
                    }
                }
            }
            return await group.reduce(into: [PGError.Code?]()) { $0.append($1) }
        }
        #expect(outcomes.count == 40 && outcomes.allSatisfy { $0 == .timeout })
        let failed = batcher.statistics
        #expect(failed.failedBatches == failed.batches && failed.batches < 40 && failed.events == 40)
        try lock.execute("COMMIT")

        let inserted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<40 { group.addTask { try await batcher.enqueue(testEvent("ok\(i)")) } }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(inserted == 40)
        #expect(try await Self.rows(pool) == 40)
        #expect(batcher.statistics.failedBatches == failed.failedBatches)
        await Self.close(batcher, pool)
    }

    @Test(arguments: [false, true]) func closedPoolFailsEveryWaiter(pipelined: Bool) async throws {
        let (_, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        await Self.close(batcher, pool)
        let codes = await withTaskGroup(of: PGError.Code?.self) { group in
            for i in 0..<20 {
                group.addTask {
                    do { _ = try await batcher.enqueue(testEvent("x\(i)")); return nil } catch { return (error as? PGError)?.code }
                }
            }
            return await group.reduce(into: [PGError.Code?]()) { $0.append($1) }
        }
        #expect(codes.count == 20 && codes.allSatisfy { $0 == .poolClosed })
        #expect(batcher.statistics.inFlight == 0 && batcher.statistics.pending == 0)
    }

    @Test(arguments: [false, true]) func aBadEventFailsAloneInItsBatch(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined, maxInFlight: 2)
        let lock = try Self.lockOutbox(url)
        let blockers = [Task { try await batcher.enqueue(testEvent("b1")) }, Task { try await batcher.enqueue(testEvent("b2")) }]
        try await Self.until(batcher) { $0.inFlight == 2 }
        var bad = testEvent("bad")
        bad.pixelID = "1\u{0}1"   // refused before it is sent, as a single insert would be
        var tasks: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("g1"), bad, testEvent("g2")].enumerated() {
            tasks.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        try lock.execute("COMMIT")
        for b in blockers { #expect(try await b.value) }
        #expect(try await tasks[0].value)
        await #expect(throws: PGError.self) { try await tasks[1].value }
        #expect(try await tasks[2].value)
        #expect(try await Self.rows(pool) == 4)
        await Self.close(batcher, pool)
    }

    @Test(arguments: [false, true]) func aCancelledCallerStillGetsItsEventQueued(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let lock = try Self.lockOutbox(url)
        let task = Task { try await batcher.enqueue(testEvent("cancelled")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        task.cancel()
        try lock.execute("COMMIT")
        #expect(try await task.value)
        #expect(try await Self.rows(pool) == 1)
        await Self.close(batcher, pool)
    }

    /// Two writers (two servers) queueing the same events at once: each event is queued once
    /// and exactly one of its two requests is told "new", whichever INSERT got there first.
    @Test(arguments: [false, true]) func twoWritersRacingTheSameEventsQueueEachOnce(pipelined: Bool) async throws {
        let (_, pool, poolURL) = try await Self.isolated()
        let a = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let b = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let news = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for i in 0..<300 {
                group.addTask { (i, try await a.enqueue(testEvent("r\(i)", time: 1_000))) }
                group.addTask { (i, try await b.enqueue(testEvent("r\(i)", time: 2_000))) }
            }
            return try await group.reduce(into: [Int: Int]()) { counts, answer in counts[answer.0, default: 0] += answer.1 ? 1 : 0 }
        }
        #expect(news.count == 300 && news.values.allSatisfy { $0 == 1 }, "each event: one 'new' of its two requests")
        #expect(try await Self.rows(pool) == 300)
        await a.pipeline?.close()
        await Self.close(b, pool)
    }

    /// Pipelined, the usual batch is a prepared plain INSERT (one prepared statement per row
    /// count, run again and again); after a conflict the next `keepQueuedAfterConflict` batches
    /// go with ON CONFLICT, then plain inserts resume.
    @Test func pipelinedBatchesArePreparedPlainInsertsAndAConflictHoldsThemOffForAWhile() async throws {
        let (_, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: true)
        let pipeline = try #require(batcher.pipeline)
        // Runs of the one-row plain INSERT, asked on the pipeline's own connection.
        func plainRuns() async throws -> Int {
            let rows = try await pipeline.query("""
                SELECT coalesce(sum(generic_plans + custom_plans), 0)::int AS n FROM pg_prepared_statements
                WHERE name = 'pixtrack_outbox_insert_1'
                """)
            return try rows[0].int("n") ?? -1
        }
        for i in 0..<3 { #expect(try await batcher.enqueue(testEvent("p\(i)"))) }
        #expect(try await plainRuns() == 3)
        #expect(pipeline.counters.prepares == 1, "prepared once, run three times")
        #expect(try await batcher.enqueue(testEvent("p0")) == false, "already queued: the plain INSERT fails, the retry keeps the row")
        #expect(batcher.statistics.conflictRetries == 1)
        let afterConflict = try await plainRuns()
        for i in 0..<MetaOutboxBatcher.keepQueuedAfterConflict { #expect(try await batcher.enqueue(testEvent("h\(i)"))) }
        #expect(try await plainRuns() == afterConflict, "held off: these went with ON CONFLICT")
        #expect(try await batcher.enqueue(testEvent("resumed")))
        #expect(try await plainRuns() == afterConflict + 1)
        #expect(try await Self.rows(pool) == 3 + MetaOutboxBatcher.keepQueuedAfterConflict + 1)
        #expect(batcher.statistics.failedBatches == 0)
        await Self.close(batcher, pool)
    }

    /// The plain INSERT's first conflict in a batch of several: an already-queued key and a
    /// repeat inside the batch; the retry answers each request as the ON CONFLICT form would.
    @Test func aMixedBatchThatMeetsAQueuedKeyIsWrittenAgainWithTheRightAnswers() async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: true)
        #expect(try await batcher.enqueue(testEvent("old")))
        let lock = try Self.lockOutbox(url)
        let blocker = Task { try await batcher.enqueue(testEvent("blocker")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        var pending: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("x", time: 1_000), testEvent("x", time: 2_000), testEvent("old"), testEvent("y")].enumerated() {
            pending.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        #expect(batcher.statistics.conflictRetries == 0, "no conflict before this batch: it goes plain first")
        try lock.execute("COMMIT")
        #expect(try await blocker.value)
        var answers: [Bool] = []
        for t in pending { answers.append(try await t.value) }
        #expect(answers == [true, false, false, true])
        #expect(batcher.statistics.conflictRetries == 1 && batcher.statistics.failedBatches == 0)
        #expect(try await Self.rows(pool) == 4)
        await Self.close(batcher, pool)
    }

    /// A statement the server refuses (a CHECK the test adds) on the plain prepared INSERT: the
    /// bad event fails alone, the others of its batch are queued.
    @Test(arguments: [false, true]) func anEventTheServerRefusesFailsAloneInItsBatch(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        try await pool.withConnection { try $0.execute("ALTER TABLE meta_events ADD CONSTRAINT test_refuse CHECK (event_id <> 'refused')") }
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        let lock = try Self.lockOutbox(url)
        let blocker = Task { try await batcher.enqueue(testEvent("blocker")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        var tasks: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("g1"), testEvent("refused"), testEvent("g2")].enumerated() {
            tasks.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        try lock.execute("COMMIT")
        #expect(try await blocker.value)
        #expect(try await tasks[0].value)
        let refused = await #expect(throws: PGError.self) { try await tasks[1].value }
        #expect(refused?.sqlState == "23514", "\(String(describing: refused))")
        #expect(try await tasks[2].value)
        #expect(try await Self.rows(pool) == 3)
        await Self.close(batcher, pool)
    }

    /// The pipelined connection killed while its batch waits: the batch fails (`.unavailable`:
    /// it may or may not have run), and the next batch reconnects and is queued.
    @Test func aKilledOutboxConnectionFailsItsBatchAndTheNextOneReconnects() async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: true)
        #expect(try await batcher.enqueue(testEvent("before")))
        let pipeline = try #require(batcher.pipeline)
        let pid = try #require(try await pipeline.query("SELECT pg_backend_pid() AS pid")[0].int("pid"))
        let lock = try Self.lockOutbox(url)
        let waiting = Task { try await batcher.enqueue(testEvent("lost")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        let killer = try PGConnection.connect(url: url)
        var killed = 0
        for _ in 0..<200 where killed == 0 {
            killed = try killer.query("""
                SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
                WHERE pid = $1 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO meta_events%'
                """, [.int(Int64(pid))]).first?.int("n") ?? 0
            if killed == 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(killed == 1)
        let lost = await #expect(throws: PGError.self) { try await waiting.value }
        #expect(lost?.code == .unavailable, "\(String(describing: lost))")
        try lock.execute("COMMIT")
        #expect(try await batcher.enqueue(testEvent("after")))
        #expect(try await Self.rows(pool) == 2)
        #expect(pipeline.counters.connects == 2)
        await Self.close(batcher, pool)
    }

    /// Two event ids that Swift's `String` takes for equal (canonically equivalent) but
    /// PostgreSQL does not: both are new, both are queued.
    @Test(arguments: [false, true]) func canonicallyEquivalentIdsAreTwoEvents(pipelined: Bool) async throws {
        let (url, pool, poolURL) = try await Self.isolated()
        let batcher = try Self.batcher(pool: pool, url: poolURL, pipelined: pipelined)
        #expect("e\u{301}" == "\u{e9}", "the premise: Swift compares them equal")
        let lock = try Self.lockOutbox(url)
        let blocker = Task { try await batcher.enqueue(testEvent("blocker")) }
        try await Self.until(batcher) { $0.inFlight == 1 }
        var tasks: [Task<Bool, any Error>] = []
        for (i, event) in [testEvent("e\u{301}"), testEvent("\u{e9}")].enumerated() {
            tasks.append(Task { try await batcher.enqueue(event) })
            try await Self.until(batcher) { $0.pending == i + 1 }
        }
        try lock.execute("COMMIT")
        #expect(try await blocker.value)
        let both = (try await tasks[0].value, try await tasks[1].value)
        #expect(both == (true, true))
        #expect(try await Self.rows(pool) == 3)
        await Self.close(batcher, pool)
    }
}
