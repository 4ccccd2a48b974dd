import Foundation
import MetaCAPI
import PixTrackMessages
import Postgres
import ProtoCodec
import RPC
import Synchronization
import Testing
@testable import Payments

/// The payment event log, the hub and the watch loop against real PostgreSQL (DESIGN §7).
@Suite struct PaymentEventTests {
    typealias R = PaymentRepositoryTests

    /// Every event, once each transaction that began before this call has ended (the log shows
    /// an event when every older writing transaction of the database has: other suites run
    /// their own transactions in the same database meanwhile).
    static func events(_ pool: PGPool) async throws -> [PaymentEventRecord] {
        try await settled(pool)
        return try await readNow(pool)
    }

    /// What a reader gets right now, without waiting.
    static func readNow(_ pool: PGPool) async throws -> [PaymentEventRecord] {
        try await pool.withConnection { try PaymentEventLog.read(after: .start, limit: 10_000, on: $0) }
    }

    /// Waits (up to 30 s) until every transaction that had begun when it was called has ended.
    static func settled(_ pool: PGPool) async throws {
        let snapshot = "pg_current_snapshot()"
        let barrier = try await pool.withConnection { try $0.query("SELECT pg_snapshot_xmax(\(snapshot))::text AS x").first?.string("x") } ?? "0"
        let end = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < end {
            let done = try await pool.withConnection { c in
                try c.query("SELECT pg_snapshot_xmin(\(snapshot)) >= $1::xid8 AS done", [.text(barrier)]).first?.bool("done") ?? false
            }
            if done { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("transactions older than the barrier still running after 30 s")
    }

    @Test func everyStatusChangeAndTheCreationAppendOneEventInItsTransaction() async throws {
        let pool = try await R.freshPool()
        let id = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }.payment.id
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.createAnswered(.created), to: id, facts: GatewayFacts(), source: "t", detail: "", purchase: { _ in false }, on: c)
        }
        // A duplicate report and a flag change no status: no event.
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.gatewayReported(.pending, amountCents: 1990), to: id, facts: GatewayFacts(), source: "t", detail: "", purchase: { _ in false }, on: c)
        }
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.contradicted("x"), to: id, facts: GatewayFacts(), source: "t", detail: "", purchase: { _ in false }, on: c)
        }
        // A change that rolls back takes its event with it.
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await pool.transaction { c in
                _ = try PaymentRepository.apply(.gatewayReported(.paid, amountCents: 1990), to: id, facts: GatewayFacts(), source: "t",
                                                detail: "", purchase: { _ in false }, on: c)
                throw Boom()
            }
        }
        var list = try await Self.events(pool)
        #expect(list.map(\.status) == [.pendingVerification, .pending])
        #expect(list.map(\.previous) == [nil, .pendingVerification])
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.gatewayReported(.paid, amountCents: 1990), to: id, facts: GatewayFacts(), source: "t", detail: "", purchase: { _ in false }, on: c)
        }
        list = try await Self.events(pool)
        #expect(list.map(\.status) == [.pendingVerification, .pending, .paid])
        // The stored payment is the row as the change left it; the wire message decodes.
        let event = try ProtoCodec.decode(list[2].encoded(), as: "pixtrack.v1.PaymentEvent")
        #expect(event.string("cursor") == PaymentEventCursor.text(list[2].position))
        #expect(event.enumValue("previous_status") == PaymentStatus.pending.protoNumber)
        #expect(event.message("payment")?.enumValue("status") == PaymentStatus.paid.protoNumber)
        #expect(event.message("payment")?.int64("id") == id)
        // The typed message and the hand-written wire form (which copies the stored payment) agree.
        let typed = try list[2].message()
        #expect(try typed.serializedBytes() == list[2].encoded())
        #expect(typed.payment?.status == .paid && typed.previousStatus == .pending && typed.payment?.id == id)
        #expect(try list[0].message().previousStatus == .unspecified)
        // One notification row per event, in the same transactions.
        let n = try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM payment_notifications").first?.int("n") }
        #expect(n == 3)
        await pool.close()
    }

    /// Transactions that commit in another order than they drew their ids would let a reader
    /// that advances its cursor skip the late one. Reading only below the oldest running
    /// transaction makes that impossible: a reader polling while 40 changes commit with random
    /// delays sees every one of them.
    @Test func aReaderFollowingTheCursorNeverMissesALateCommit() async throws {
        let pool = try await R.freshPool()
        let finished = Atomic<Bool>(false)
        let writers = Task {
            defer { finished.store(true, ordering: .relaxed) }
            try await withThrowingTaskGroup(of: Void.self) { g in
                for _ in 0..<40 {
                    g.addTask {
                        try await pool.transaction { c in
                            _ = try PaymentRepository.insert(R.draft(), on: c)
                            try c.execute("SELECT pg_sleep(random() * 0.02)")
                        }
                    }
                }
                try await g.waitForAll()
            }
        }
        var seen: [PaymentEventPosition] = []
        var cursor = PaymentEventPosition.start
        var settled = false
        while true {
            let done = finished.load(ordering: .relaxed)
            let from = cursor
            let page = try await pool.withConnection { try PaymentEventLog.read(after: from, limit: 100, on: $0) }
            for e in page { seen.append(e.position); cursor = e.position }
            if page.isEmpty {
                if done && settled { break }
                if done {
                    // Other suites' transactions may still hold the last events back: wait them out, read once more.
                    try await Self.settled(pool)
                    settled = true
                    continue
                }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        try await writers.value
        let all = try await Self.events(pool).map(\.position)
        #expect(all.count == 40)
        #expect(seen == all, "the polling reader skipped \(Set(all).subtracting(seen).sorted())")
        await pool.close()
    }

    /// Writers never wait for each other (there is no append lock): a change commits while an
    /// older transaction that appended is still open. Readers see neither until the older one
    /// ends, then both, in order; the cursor never has to go back.
    @Test func anOpenOlderTransactionHoldsBackLaterEventsAndNothingWaitsForIt() async throws {
        let pool = try await R.freshPool()
        let id1 = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }.payment.id
        let id2 = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }.payment.id
        let created = try await Self.events(pool)
        #expect(created.count == 2)
        let head0 = try await pool.withConnection { try PaymentEventLog.head(on: $0) }
        #expect(head0 == created[1].position)

        // The older transaction appends (payment 1 → pending) and stays open until told.
        let gate = Atomic<Bool>(false)
        let appended = Atomic<Bool>(false)
        let older = Task {
            try await pool.transaction { c in
                _ = try PaymentRepository.apply(.createAnswered(.created), to: id1, facts: GatewayFacts(), source: "t", detail: "",
                                                purchase: { _ in false }, on: c)
                appended.store(true, ordering: .releasing)
                let end = ContinuousClock.now + .seconds(30)
                while !gate.load(ordering: .acquiring), ContinuousClock.now < end { usleep(2_000) }
            }
        }
        try await Self.waitUntil("the older append") { appended.load(ordering: .acquiring) }
        // A younger change commits meanwhile, without waiting for the older one (which holds
        // for up to 30 s: under an append lock this would take that long).
        let start = ContinuousClock.now
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.createAnswered(.created), to: id2, facts: GatewayFacts(), source: "t", detail: "",
                                        purchase: { _ in false }, on: c)
        }
        let took = ContinuousClock.now - start
        #expect(took < .seconds(10), "the younger change waited for the older transaction (\(took))")
        // Committed, but behind a running older transaction: not readable yet.
        #expect(try await Self.readNow(pool).count == 2)
        #expect(try await pool.withConnection { try PaymentEventLog.head(on: $0) } == head0)

        gate.store(true, ordering: .releasing)
        try await older.value
        #expect(try await Self.events(pool).count == 4)
        let after = try await pool.withConnection { try PaymentEventLog.read(after: head0, limit: 10, on: $0) }
        #expect(after.map(\.paymentID) == [id1, id2], "the older transaction's event first")
        #expect(after.allSatisfy { $0.position > head0 })
        await pool.close()
    }

    /// A transaction can draw its id before an earlier change of the same payment draws its
    /// own. The payment's events still come in the order of its changes: the later change takes
    /// the previous event's key when that is higher (both changes hold the payment's row lock).
    @Test func aPaymentsEventsKeepTheOrderOfItsChangesWhateverTheTransactionIDs() async throws {
        let pool = try await R.freshPool()
        let id = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }.payment.id
        let drawn = Atomic<Bool>(false)
        let go = Atomic<Bool>(false)
        let later = Task {
            try await pool.transaction { c -> String in
                // This transaction's id comes first...
                let xid = try c.query("SELECT pg_current_xact_id()::text AS x").first?.string("x") ?? ""
                drawn.store(true, ordering: .releasing)
                let end = ContinuousClock.now + .seconds(30)
                while !go.load(ordering: .acquiring), ContinuousClock.now < end { usleep(2_000) }
                // ...but its change to the payment comes second.
                _ = try PaymentRepository.apply(.gatewayReported(.paid, amountCents: 1990), to: id, facts: GatewayFacts(), source: "t",
                                                detail: "", purchase: { _ in false }, on: c)
                return xid
            }
        }
        try await Self.waitUntil("the later change's transaction id") { drawn.load(ordering: .acquiring) }
        _ = try await pool.transaction { c in
            try PaymentRepository.apply(.createAnswered(.created), to: id, facts: GatewayFacts(), source: "t", detail: "",
                                        purchase: { _ in false }, on: c)
        }
        go.store(true, ordering: .releasing)
        let laterXID = try await later.value
        let mine = try await Self.events(pool).filter { $0.paymentID == id }
        #expect(mine.map(\.status) == [.pendingVerification, .pending, .paid], "in the order of the changes")
        #expect(mine.map(\.previous) == [nil, .pendingVerification, .pending])
        #expect(mine.count == 3 && mine[2].position.xid > UInt64(laterXID) ?? 0, "the later change took the higher key")
        await pool.close()
    }

    /// Keys are compared as numbers, not as their text: 9 < 10 < 99 < 100 in `read` and `head`
    /// (rows written directly with old, long-finished keys of different lengths).
    @Test func keysOfDifferentLengthsSortAsNumbers() async throws {
        let pool = try await R.freshPool()
        let id = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }.payment.id
        try await pool.withConnection { c in
            for xid in ["100", "9", "99", "10"] {
                try c.execute("""
                    INSERT INTO payment_events (id, xid, payment_id, bot_id, status, payment)
                    VALUES (nextval('payment_events_id_seq'), $1::xid8, $2, 7, 'pending', ''::bytea)
                    """, [.text(xid), .int(id)])
            }
        }
        let keys = try await Self.events(pool).map(\.position.xid)
        #expect(keys.prefix(4) == [9, 10, 99, 100], "\(keys)")
        let head = try await pool.withConnection { try PaymentEventLog.head(on: $0) }
        #expect(head.xid > 100, "the creation event, whose key is its transaction's id, is the newest")
        let upTo = try await pool.withConnection { c in
            try PaymentEventLog.read(after: PaymentEventPosition(xid: 9, id: 0), upTo: PaymentEventPosition(xid: 99, id: Int64.max), limit: 10, on: c)
        }
        #expect(upTo.map(\.position.xid) == [9, 10, 99])
        await pool.close()
    }

    @Test func cursorsRoundTripAndOldBareIDsStillParse() {
        let p = PaymentEventPosition(xid: 812_345, id: 77)
        #expect(PaymentEventCursor.text(p) == "812345.77")
        #expect(PaymentEventCursor.parse("812345.77") == p)
        #expect(PaymentEventCursor.parse("41") == PaymentEventPosition(xid: 0, id: 41), "a cursor issued before positions had an xid")
        #expect(PaymentEventCursor.text(PaymentEventPosition(xid: 0, id: 41)) == "41")
        for bad in ["", ".", "1.", ".1", "0.5", "01.5", "1.05", "-1", "1.-2", "1.2.3", "x", "1.x", "18446744073709551616.1"] {
            #expect(PaymentEventCursor.parse(bad) == nil, "\(bad)")
        }
        #expect(PaymentEventPosition(xid: 0, id: 99) < PaymentEventPosition(xid: 5, id: 1))
        #expect(PaymentEventPosition(xid: 5, id: 1) < PaymentEventPosition(xid: 5, id: 2))
    }

    /// What a watcher received, in order.
    final class Received: Sendable {
        let list = Mutex<[ProtoMessage]>([])
        func add(_ bytes: [UInt8]) throws {
            let m = try ProtoCodec.decode(bytes, as: "pixtrack.v1.PaymentEvent")
            list.withLock { $0.append(m) }
        }
        var events: [ProtoMessage] { list.withLock { $0.filter { $0.message("payment") != nil } } }
        var all: [ProtoMessage] { list.withLock { $0 } }
    }

    static func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ ok: () -> Bool) async throws {
        let end = ContinuousClock.now + timeout
        while !ok() {
            guard ContinuousClock.now < end else { Issue.record("timed out waiting for \(what)"); return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func resumeReplaysFromTheTableThenContinuesLiveWithoutGapOrDuplicate() async throws {
        let pool = try await R.freshPool()
        var hc = PaymentEventHub.Configuration()
        hc.ringSize = 8          // small: the watcher starts behind the ring and must read the table
        hc.pollInterval = .milliseconds(20)
        let hub = PaymentEventHub(pool: pool, configuration: hc)
        hub.start()
        var wc = PaymentWatchConfiguration()
        wc.pageSize = 5
        wc.heartbeat = .milliseconds(300)
        let watchers = PaymentWatchers(hub: hub, pool: pool, configuration: wc)
        for _ in 0..<30 { _ = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) } }
        let before = try await Self.events(pool)
        let resumeAt = before[9].position
        let received = Received()
        let watch = Task {
            try await watchers.watch(botID: 0, afterCursor: PaymentEventCursor.text(resumeAt), connection: "c1") { try received.add($0) }
        }
        // New events while it replays: they must come after the replayed ones, once each.
        for _ in 0..<30 { _ = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) } }
        try await Self.waitUntil("50 events") { received.events.count >= 50 }
        let all = try await Self.events(pool).map { PaymentEventCursor.text($0.position) }
        #expect(received.events.map { $0.string("cursor") } == Array(all[10...]))
        // Idle: a heartbeat carries the position.
        try await Self.waitUntil("a heartbeat") { received.all.contains { $0.message("payment") == nil } }
        #expect(received.all.last { $0.message("payment") == nil }?.string("cursor") == all.last)
        #expect(watchers.openCount == 1)
        watch.cancel()
        _ = await watch.result
        #expect(watchers.openCount == 0)
        await hub.shutdown()
        await pool.close()
    }

    @Test func aBotFilterAndAnEmptyCursorGiveOnlyNewEventsOfThatBot() async throws {
        let pool = try await R.freshPool()
        var hc = PaymentEventHub.Configuration()
        hc.pollInterval = .milliseconds(20)
        let hub = PaymentEventHub(pool: pool, configuration: hc)
        hub.start()
        let watchers = PaymentWatchers(hub: hub, pool: pool)
        _ = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }  // before the watch: not sent
        let received = Received()
        let watch = Task { try await watchers.watch(botID: 8, afterCursor: "", connection: "c1") { try received.add($0) } }
        try await Task.sleep(for: .milliseconds(200))
        var other = R.draft()
        other.botID = 8
        let o = other
        for i in 0..<4 {
            _ = try await pool.transaction { try PaymentRepository.insert(i % 2 == 0 ? o : R.draft(), on: $0) }
        }
        try await Self.waitUntil("2 events") { received.events.count >= 2 }
        try await Task.sleep(for: .milliseconds(200))
        #expect(received.events.count == 2)
        #expect(received.events.allSatisfy { $0.message("payment")?.int64("bot_id") == 8 })
        watch.cancel()
        _ = await watch.result
        await hub.shutdown()
        await pool.close()
    }

    @Test func aWatcherThatReadsNothingIsCutOffWithResourceExhausted() async throws {
        let pool = try await R.freshPool()
        let hub = PaymentEventHub(pool: pool)
        hub.start()
        var wc = PaymentWatchConfiguration()
        wc.stallTimeout = .milliseconds(200)
        let watchers = PaymentWatchers(hub: hub, pool: pool, configuration: wc)
        _ = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) }
        let started = ContinuousClock.now
        // The transport's send never returns (a client that does not read).
        await #expect {
            try await watchers.watch(botID: 0, afterCursor: "0", connection: "c1") { _ in
                try await Task.sleep(for: .seconds(3600))
            }
        } throws: { ($0 as? RPCError)?.code == .resourceExhausted }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(watchers.cutOffCount == 1 && watchers.openCount == 0)
        await hub.shutdown()
        await pool.close()
    }

    @Test func openWatchesAreLimitedPerConnectionAndInAll() async throws {
        let pool = try await R.freshPool()
        let hub = PaymentEventHub(pool: pool)
        hub.start()
        var wc = PaymentWatchConfiguration()
        wc.maxPerConnection = 2
        wc.maxWatches = 3
        let watchers = PaymentWatchers(hub: hub, pool: pool, configuration: wc)
        let open = (0..<2).map { _ in Task { try await watchers.watch(botID: 0, afterCursor: "", connection: "a") { _ in } } }
        try await Self.waitUntil("2 open") { watchers.openCount == 2 }
        await #expect { try await watchers.watch(botID: 0, afterCursor: "", connection: "a") { _ in } } throws: {
            ($0 as? RPCError)?.code == .resourceExhausted
        }
        let third = Task { try await watchers.watch(botID: 0, afterCursor: "", connection: "b") { _ in } }
        try await Self.waitUntil("3 open") { watchers.openCount == 3 }
        await #expect { try await watchers.watch(botID: 0, afterCursor: "", connection: "c") { _ in } } throws: {
            ($0 as? RPCError)?.code == .resourceExhausted
        }
        await #expect { try await watchers.watch(botID: 0, afterCursor: "abc", connection: "d") { _ in } } throws: {
            ($0 as? RPCError)?.code == .invalidArgument
        }
        for t in open + [third] { t.cancel(); _ = await t.result }
        #expect(watchers.openCount == 0)
        await hub.shutdown()
        await pool.close()
    }

    @Test func theListenerWakesOnNotifyAndAgainAfterItsConnectionIsKilled() async throws {
        let pool = try await R.freshPool()
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"] else { return }
        let wakes = Mutex<[PGListener.Wake]>([])
        var options = PGConnectionOptions()
        options.applicationName = "evtest\(UInt32.random(in: 0...UInt32.max))"
        let listener = PGListener(url: url, channel: "pixtrack_test_events", options: options, logger: Logger(minimum: .error)) { w in
            wakes.withLock { $0.append(w) }
        }
        listener.start()
        try await Self.waitUntil("connected") { wakes.withLock { $0.first == .connected } }
        try await pool.withConnection { try $0.execute("SELECT pg_notify('pixtrack_test_events', '')") }
        try await Self.waitUntil("notified") { wakes.withLock { $0.contains { if case .notified = $0 { true } else { false } } } }
        let name = options.applicationName + "-listen"
        try await pool.withConnection {
            try $0.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [.text(name)])
        }
        try await Self.waitUntil("reconnected") { wakes.withLock { $0.filter { $0 == .connected }.count == 2 } }
        #expect(listener.reconnectCount == 1)
        listener.stop()
        await pool.close()
    }

    @Test func notificationsAreSignedWithHMACSHA256AndRetriedWithDoublingDelay() {
        // RFC 4231 test case 2.
        #expect(SHA256Hex.hmac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        #expect(SHA256Hex.hmac(key: [UInt8](repeating: 0xaa, count: 131),
                               message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        let body = Array("{\"cursor\":\"7\"}".utf8)
        #expect(NotificationSignature.header(secret: "s3cr3t", timestamp: 1_700_000_000, body: body)
                == "t=1700000000,v1=" + SHA256Hex.hmac(key: Array("s3cr3t".utf8), message: Array("1700000000.".utf8) + body))
        var c = NotificationConfiguration()
        c.retryMs = 5000
        c.retryMaxMs = 60_000
        #expect((1...6).map { c.retryDelayMs(afterAttempt: $0) } == [5000, 10_000, 20_000, 40_000, 60_000, 60_000])
        #expect(c.retryDelayMs(afterAttempt: 10_000) == 60_000)
    }
}
