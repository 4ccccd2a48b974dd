import PluginHost
import Postgres

/// What the gateway told us besides a status; empty fields change nothing.
public struct GatewayFacts: Sendable, Equatable {
    public var transactionID = ""
    public var gatewayHash = ""
    public var pixCode = ""
    public var qrCodeBase64 = ""
    public var expiresAtMs: Int64 = 0
    public var paidAtMs: Int64 = 0
    public var message = ""
    public init() {}
}

/// The result of applying one event under the row lock.
public struct Applied: Sendable {
    public var payment: Payment
    public var previous: PaymentStatus
    public var action: PaymentMachine.Action
    public var purchaseQueued: Bool
    /// What the gateway's status API answered, when it was asked (`.unknown` also when the call
    /// failed: then `gatewayFailure` says why).
    public var gatewayStatus: GatewayStatus? = nil
    public var gatewayFailure: String? = nil
    public var changed: Bool { payment.status != previous }
    /// The gateway was asked and gave a usable answer.
    public var gatewayAnswered: Bool { gatewayStatus.map { $0 != .unknown } ?? false }
}

/// Parameterized SQL over `payments` and `payment_status_history`. Every function runs on the
/// caller's connection (inside the caller's transaction when there is one).
public enum PaymentRepository {
    /// A new row in `pending_verification` plus its first history row. With an idempotency key
    /// that already exists, returns the existing row instead (`isNew` false).
    public static func insert(_ p: Payment, on c: PGConnection) throws -> (payment: Payment, isNew: Bool) {
        let idem: PGValue? = p.idempotencyKey.isEmpty ? nil : .text(p.idempotencyKey)
        let rows = try c.query("""
            INSERT INTO payments (status, gateway, bot_id, telegram_user_id, amount_cents, description, customer_name,
                customer_email, customer_phone, customer_document, tracking_token, token_source, fbclid, utm_source,
                utm_medium, utm_campaign, utm_content, utm_term, idempotency_key, request_fingerprint)
            VALUES ('pending_verification', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
            ON CONFLICT (bot_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING \(Payment.columns)
            """, [.text(p.gateway), .int(p.botID), .int(p.telegramUserID), .int(p.amountCents), .text(p.description),
                  .text(p.customer.name), .text(p.customer.email), .text(p.customer.phone), .text(p.customer.document),
                  .text(p.trackingToken), .int(Int64(p.tokenSource)), .text(p.fbclid), .text(p.utm.source),
                  .text(p.utm.medium), .text(p.utm.campaign), .text(p.utm.content), .text(p.utm.term), idem,
                  .text(p.requestFingerprint)])
        if let row = rows.first {
            let payment = try Payment(row: row)
            try history(payment.id, from: nil, to: .pendingVerification, source: "generate", detail: "row committed before the gateway call", on: c)
            try PaymentEventLog.appendQueued(payment, previous: nil, on: c)
            return (payment, true)
        }
        let existing = try c.query("SELECT \(Payment.columns) FROM payments WHERE bot_id = $1 AND idempotency_key = $2",
                                   [.int(p.botID), .text(p.idempotencyKey)])
        guard let row = existing.first else { throw PGError(.queryFailed, "idempotent insert found no row") }
        return (try Payment(row: row), false)
    }

    /// Queued (`PGConnection.enqueue`): in a transaction it goes out with the next statement.
    public static func history(_ id: Int64, from: PaymentStatus?, to: PaymentStatus, source: String, detail: String,
                               on c: PGConnection) throws {
        try c.enqueue("""
            INSERT INTO payment_status_history (payment_id, from_status, to_status, source, detail) VALUES ($1, $2, $3, $4, $5)
            """, [.int(id), from.map { .text($0.rawValue) }, .text(to.rawValue), .text(source), .text(String(detail.prefix(500)))])
    }

    public static func get(id: Int64, forUpdate: Bool = false, on c: PGConnection) throws -> Payment? {
        try c.query("SELECT \(Payment.columns) FROM payments WHERE id = $1\(forUpdate ? " FOR UPDATE" : "")", [.int(id)])
            .first.map(Payment.init(row:))
    }

    public static func get(gateway: String, transactionID: String, on c: PGConnection) throws -> Payment? {
        guard !transactionID.isEmpty else { return nil }
        let sql = gateway.isEmpty
            ? "SELECT \(Payment.columns) FROM payments WHERE gateway_transaction_id = $1 ORDER BY id LIMIT 1"
            : "SELECT \(Payment.columns) FROM payments WHERE gateway_transaction_id = $1 AND gateway = $2"
        let params: [PGValue?] = gateway.isEmpty ? [.text(transactionID)] : [.text(transactionID), .text(gateway)]
        return try c.query(sql, params).first.map(Payment.init(row:))
    }

    /// By the gateway's second id (ÁtomoPay's `hash`), for webhooks that carry only that one.
    public static func get(gateway: String, gatewayHash: String, on c: PGConnection) throws -> Payment? {
        guard !gatewayHash.isEmpty else { return nil }
        return try c.query("SELECT \(Payment.columns) FROM payments WHERE gateway = $1 AND gateway_hash = $2 ORDER BY id LIMIT 1",
                           [.text(gateway), .text(gatewayHash)]).first.map(Payment.init(row:))
    }

    public static func get(legacyID: String, on c: PGConnection) throws -> Payment? {
        try c.query("SELECT \(Payment.columns) FROM payments WHERE legacy_payment_id = $1", [.text(legacyID)])
            .first.map(Payment.init(row:))
    }

    /// Applies `event` to payment `id` under `SELECT … FOR UPDATE`: records facts, moves the
    /// status if the machine allows it, writes the history row, queues the Purchase (built by
    /// `purchase`) on the first transition to `paid`, and appends the status change to
    /// `payment_events`, all in the caller's transaction.
    public static func apply(_ event: PaymentMachine.Event, to id: Int64, facts: GatewayFacts, source: String,
                             detail: String, purchase: (Payment) throws -> Bool, on c: PGConnection) throws -> Applied? {
        // The row, locked, and the transaction's clock (`now()`, what `updated_at` will be set to).
        guard let locked = try c.query("""
            SELECT \(Payment.columns), (extract(epoch FROM now()) * 1000)::bigint AS now_ms FROM payments WHERE id = $1 FOR UPDATE
            """, [.int(id)]).first else { return nil }
        var p = try Payment(row: locked)
        let nowMs = try locked.int64("now_ms") ?? p.updatedAtMs
        let original = p
        let previous = p.status
        var machine = p.machine
        let action = machine.handle(event)
        // Facts fill what is empty: a transaction id once known never changes.
        if p.transactionID.isEmpty, !facts.transactionID.isEmpty { p.transactionID = facts.transactionID }
        if p.gatewayHash.isEmpty { p.gatewayHash = facts.gatewayHash }
        if p.pixCode.isEmpty { p.pixCode = facts.pixCode }
        if p.qrCodeBase64.isEmpty { p.qrCodeBase64 = facts.qrCodeBase64 }
        if p.expiresAtMs == 0 { p.expiresAtMs = facts.expiresAtMs }
        if !facts.message.isEmpty { p.gatewayMessage = String(facts.message.prefix(500)) }
        var queuePurchase = false
        var flagNote: String?
        switch action {
        case .transition(let to, let purchaseWanted, let flag):
            p.status = to
            queuePurchase = purchaseWanted
            flagNote = flag
            if previous == .unresolved { p.flagged = false; p.reviewReason = "" }  // settled: the old flag is answered
            if to.isOpen { p.reconcileDone = false }  // reopened: the reconciler polls it again
            try history(id, from: previous, to: to, source: source, detail: flag.map { detail + "; " + $0 } ?? detail, on: c)
        case .flag(let reason):
            flagNote = reason
            try history(id, from: previous, to: previous, source: source, detail: "flagged: " + reason, on: c)
        case .ignore:
            break
        }
        if let flagNote {
            p.flagged = true
            p.reviewReason = String(flagNote.prefix(500))
        }
        if event == .gaveUp { p.reconcileDone = true }
        // A duplicate (nothing new) leaves the row, and its updated_at, as it was.
        if p == original && !queuePurchase {
            return Applied(payment: p, previous: previous, action: action, purchaseQueued: false)
        }
        let paidAt: PGValue? = queuePurchase ? .int(facts.paidAtMs > 0 ? facts.paidAtMs : 0) : nil
        // Queued: nothing below needs its answer (`updated_at` is `now()`, read above).
        try c.enqueue("""
            UPDATE payments SET status = $2, reconcile_done = $3, gateway_transaction_id = nullif($4, ''),
                gateway_hash = $5, pix_code = $6, qr_code_base64 = $7, expires_at_ms = $8, gateway_message = $9,
                flagged = $10, review_reason = $11, updated_at = now(),
                paid_at = CASE WHEN $12::bigint IS NULL THEN paid_at
                               WHEN $12::bigint > 0 THEN to_timestamp($12::bigint / 1000.0) ELSE now() END
            WHERE id = $1
            """, [.int(id), .text(p.status.rawValue), .bool(p.reconcileDone), .text(p.transactionID), .text(p.gatewayHash),
                  .text(p.pixCode), .text(p.qrCodeBase64), .int(p.expiresAtMs), .text(p.gatewayMessage), .bool(p.flagged),
                  .text(p.reviewReason), paidAt])
        p.updatedAtMs = nowMs
        var queued = false
        if queuePurchase {
            guard let fresh = try get(id: id, on: c) else { return nil }
            p = fresh
            let already = try c.query("SELECT purchase_queued FROM payments WHERE id = $1", [.int(id)]).first?.bool("purchase_queued") ?? false
            if !already {
                queued = try purchase(p)
                try c.enqueue("UPDATE payments SET purchase_queued = true WHERE id = $1", [.int(id)])
            }
        }
        // Under the row lock taken above: the event sorts after the payment's previous one.
        if p.status != previous { try PaymentEventLog.appendQueued(p, previous: previous, on: c) }
        return Applied(payment: p, previous: previous, action: action, purchaseQueued: queued)
    }
}
