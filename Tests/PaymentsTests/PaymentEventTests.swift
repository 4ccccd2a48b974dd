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

    static func events(_ pool: PGPool) async throws -> [PaymentEventRecord] {
        try await pool.withConnection { try PaymentEventLog.read(after: 0, limit: 10_000, on: $0) }
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
        #expect(event.string("cursor") == String(list[2].cursor))
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
    /// that advances its cursor skip the late one. The append lock makes that impossible: a
    /// reader polling while 40 changes commit with random delays sees every one of them.
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
        var seen: [Int64] = []
        var cursor: Int64 = 0
        while true {
            let done = finished.load(ordering: .relaxed)
            let from = cursor
            let page = try await pool.withConnection { try PaymentEventLog.read(after: from, limit: 100, on: $0) }
            for e in page { seen.append(e.cursor); cursor = e.cursor }
            if page.isEmpty {
                if done { break }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        try await writers.value
        let all = try await Self.events(pool).map(\.cursor)
        #expect(seen == all, "the polling reader skipped \(Set(all).subtracting(seen).sorted())")
        await pool.close()
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
        let resumeAt = before[9].cursor
        let received = Received()
        let watch = Task {
            try await watchers.watch(botID: 0, afterCursor: String(resumeAt), connection: "c1") { try received.add($0) }
        }
        // New events while it replays: they must come after the replayed ones, once each.
        for _ in 0..<30 { _ = try await pool.transaction { try PaymentRepository.insert(R.draft(), on: $0) } }
        try await Self.waitUntil("50 events") { received.events.count >= 50 }
        let all = try await Self.events(pool).map { String($0.cursor) }
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
