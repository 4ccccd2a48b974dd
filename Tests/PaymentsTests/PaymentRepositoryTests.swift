import Foundation
import MetaCAPI
import PluginHost
import PixTrackMessages
import Postgres
import RPC
import Testing
@testable import Payments

/// The repository against real PostgreSQL (`DATABASE_URL`), each test in a schema of its own.
@Suite struct PaymentRepositoryTests {
    struct MissingDatabase: Error, CustomStringConvertible {
        var description: String {
            "DATABASE_URL is not set: run `scripts/services temp swift test --filter PaymentsTests` or `make test`"
        }
    }

    static func freshPool(migrations: [PGMigration] = MetaMigrations.all + PaymentMigrations.all) async throws -> PGPool {
        guard let base = ProcessInfo.processInfo.environment["DATABASE_URL"], !base.isEmpty else { throw MissingDatabase() }
        let schema = "t_pay_\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
        let admin = try PGPool(PGPoolConfiguration(url: base), logger: Logger(minimum: .error))
        try await admin.withConnection { try $0.execute("CREATE SCHEMA \(schema)") }
        await admin.close()
        var cfg = PGPoolConfiguration(url: base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)")
        cfg.maxConnections = 4
        let pool = try PGPool(cfg, logger: Logger(minimum: .error))
        _ = try await PGMigrator(pool: pool, migrations: migrations, logger: Logger(minimum: .error)).migrate()
        return pool
    }

    static func draft(key: String = "") -> Payment {
        var p = Payment(id: 0, status: .pendingVerification, gateway: "sandbox", botID: 7, telegramUserID: 99, amountCents: 1990)
        p.idempotencyKey = key
        p.requestFingerprint = "fp"
        p.trackingToken = String(repeating: "a", count: 32)
        return p
    }

    @Test func insertCommitsPendingVerificationWithHistoryAndIdempotency() async throws {
        let pool = try await Self.freshPool()
        let first = try await pool.transaction { try PaymentRepository.insert(Self.draft(key: "k1"), on: $0) }
        #expect(first.isNew && first.payment.status == .pendingVerification && first.payment.reference == "PAY-\(first.payment.id)")
        let again = try await pool.transaction { try PaymentRepository.insert(Self.draft(key: "k1"), on: $0) }
        #expect(!again.isNew && again.payment.id == first.payment.id)
        let other = try await pool.transaction { try PaymentRepository.insert(Self.draft(), on: $0) }
        #expect(other.isNew && other.payment.id != first.payment.id)
        let n = try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM payment_status_history").first?.int("n") }
        #expect(n == 2)
        await pool.close()
    }

    @Test func firstPaidQueuesExactlyOnePurchaseInTheSameTransaction() async throws {
        let pool = try await Self.freshPool()
        let id = try await pool.transaction { try PaymentRepository.insert(Self.draft(), on: $0) }.payment.id
        var facts = GatewayFacts()
        facts.transactionID = "sbx1"
        facts.pixCode = "000201"
        let account = BotGatewayAccount(botID: 7, gateway: "sandbox", metaPixelID: "123456789012345")
        var snapshot = TrackingSnapshot()
        snapshot.fbp = "fb.1.1.2"
        snapshot.fbclid = "IwAR1"
        let s = snapshot, f = facts
        let created = try await pool.transaction { c in
            try PaymentRepository.apply(.createAnswered(.created), to: id, facts: f, source: "test", detail: "", purchase: { _ in false }, on: c)
        }
        // The UPDATE went out queued; the answer's updated_at is the row's, and the event's.
        let stored = try await pool.withConnection { c in
            (try PaymentRepository.get(id: id, on: c),
             try c.query("SELECT payment FROM payment_events WHERE payment_id = $1 ORDER BY id DESC LIMIT 1", [.int(id)]).first?.bytes("payment"))
        }
        #expect(created?.payment.status == .pending && stored.0?.status == .pending && stored.0?.pixCode == "000201")
        #expect(created?.payment.updatedAtMs == stored.0?.updatedAtMs && (stored.0?.updatedAtMs ?? 0) > 0)
        let eventPayment = try stored.1.map { try Pixtrack_V1_Payment(serializedBytes: $0) }
        #expect(eventPayment?.updatedAtUnixMs == stored.0?.updatedAtMs)
        for _ in 0..<3 {
            _ = try await pool.transaction { c in
                try PaymentRepository.apply(.gatewayReported(.paid, amountCents: 1990), to: id, facts: GatewayFacts(), source: "test",
                                            detail: "", purchase: { try PurchaseEvent.enqueue($0, account: account, tracking: s, on: c) }, on: c)
            }
        }
        let rows = try await pool.withConnection { try $0.query("SELECT event_id, event_time, payload::text AS p FROM meta_events") }
        #expect(rows.count == 1)
        #expect(try rows.first?.string("event_id") == "purchase_\(id)")
        let payload = try rows.first?.string("p") ?? ""
        #expect(payload.contains("\"value\": 19.9") || payload.contains("\"value\":19.9"))
        let p = try await pool.withConnection { try PaymentRepository.get(id: id, on: $0) }
        #expect(p?.status == .paid && p?.transactionID == "sbx1" && (p?.paidAtMs ?? 0) > 0)
        #expect(try rows.first?.int64("event_time") == (p?.paidAtMs ?? 0) / 1000)
        // A rollback takes the event with it: nothing is queued for a transition that did not commit.
        let id2 = try await pool.transaction { try PaymentRepository.insert(Self.draft(), on: $0) }.payment.id
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await pool.transaction { c in
                _ = try PaymentRepository.apply(.gatewayReported(.paid, amountCents: 1990), to: id2, facts: GatewayFacts(), source: "test",
                                                detail: "", purchase: { try PurchaseEvent.enqueue($0, account: account, tracking: s, on: c) }, on: c)
                throw Boom()
            }
        }
        let count = try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM meta_events").first?.int("n") }
        #expect(count == 1)
        await pool.close()
    }

    @Test func giveUpIsUnresolvedAndStopsPollingUntilTheChargeTurnsUp() async throws {
        let pool = try await Self.freshPool()
        let id = try await pool.transaction { try PaymentRepository.insert(Self.draft(), on: $0) }.payment.id
        let gaveUp = try await pool.transaction { c in
            try PaymentRepository.apply(.gaveUp, to: id, facts: GatewayFacts(), source: "reconciler", detail: "no answer after 4 checks",
                                        purchase: { _ in false }, on: c)
        }
        #expect(gaveUp?.payment.status == .unresolved && gaveUp?.payment.flagged == true && gaveUp?.payment.reconcileDone == true)
        // A webhook hint confirmed by the gateway: the ids are bound, the flag answered, polling resumes.
        var facts = GatewayFacts()
        facts.transactionID = "atm-1"
        facts.gatewayHash = "h-1"
        let f = facts
        let back = try await pool.transaction { c in
            try PaymentRepository.apply(.gatewayReported(.pending, amountCents: 0), to: id, facts: f, source: "webhook", detail: "",
                                        purchase: { _ in false }, on: c)
        }
        let p = try #require(back?.payment)
        #expect(p.status == .pending && !p.flagged && p.reviewReason.isEmpty && !p.reconcileDone)
        #expect(p.transactionID == "atm-1" && p.gatewayHash == "h-1")
        let byHash = try await pool.withConnection { try PaymentRepository.get(gateway: "sandbox", gatewayHash: "h-1", on: $0) }
        #expect(byHash?.id == id)
        #expect(try await pool.withConnection { try PaymentRepository.get(gateway: "other", gatewayHash: "h-1", on: $0) } == nil)
        // A contradiction flags and binds nothing new.
        let flagged = try await pool.transaction { c in
            try PaymentRepository.apply(.contradicted("gateway says PAY-9"), to: id, facts: GatewayFacts(), source: "webhook", detail: "",
                                        purchase: { _ in false }, on: c)
        }
        #expect(flagged?.payment.status == .pending && flagged?.payment.flagged == true && flagged?.payment.reviewReason == "gateway says PAY-9")
        await pool.close()
    }

    @Test func migrationTurnsInferredFailuresIntoUnresolved() async throws {
        let pool = try await Self.freshPool(migrations: PaymentMigrations.all.filter { $0.version == 100 })
        try await pool.withConnection { c in
            try c.execute("""
                INSERT INTO payments (status, inferred_failure, flagged, gateway, bot_id, telegram_user_id, amount_cents) VALUES
                    ('failed', true, true, 'paradise', 1, 1, 100), ('failed', false, false, 'paradise', 1, 1, 100),
                    ('pending', false, true, 'paradise', 1, 1, 100), ('pending', false, false, 'paradise', 1, 1, 100)
                """)
        }
        _ = try await PGMigrator(pool: pool, migrations: PaymentMigrations.all, logger: Logger(minimum: .error)).migrate()
        let rows = try await pool.withConnection { c in
            try c.query("SELECT status, reconcile_done FROM payments ORDER BY id").map { "\(try $0.string("status")!)/\(try $0.bool("reconcile_done")!)" }
        }
        #expect(rows == ["unresolved/false", "failed/false", "pending/true", "pending/false"])
        await pool.close()
    }
}
