import PixTrackMessages
import PluginHost
import Postgres

/// One payment row, as the service sees it. Amounts are integer centavos.
public struct Payment: Sendable, Equatable {
    public var id: Int64
    public var status: PaymentStatus
    public var gateway: String
    public var botID: Int64
    public var telegramUserID: Int64
    public var amountCents: Int64
    public var description = ""
    public var customer = GatewayCustomer()
    public var transactionID = ""
    public var gatewayHash = ""
    public var pixCode = ""
    public var qrCodeBase64 = ""
    public var expiresAtMs: Int64 = 0
    public var trackingToken = ""
    public var tokenSource: Int32 = 0
    public var fbclid = ""
    public var utm = UTM()
    public var idempotencyKey = ""
    public var requestFingerprint = ""
    public var flagged = false
    public var reviewReason = ""
    public var gatewayMessage = ""
    public var checks = 0
    /// The reconciler stopped polling it (gave up); reset when the payment reopens.
    public var reconcileDone = false
    public var createdAtMs: Int64 = 0
    public var updatedAtMs: Int64 = 0
    public var paidAtMs: Int64 = 0

    /// `PAY-{id}`: the reference sent to the gateway.
    public var reference: String { Self.reference(id) }

    public static func reference(_ id: Int64) -> String { "PAY-\(id)" }

    /// The id inside `PAY-{id}`, nil for anything else.
    public static func id(fromReference text: String) -> Int64? {
        guard text.hasPrefix("PAY-"), let id = Int64(text.dropFirst(4)), id > 0, "PAY-\(id)" == text else { return nil }
        return id
    }

    /// `BOT{bot}_{ts}_{hex}` payment ids of the original system.
    public static func isLegacyID(_ text: String) -> Bool {
        let parts = text.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].hasPrefix("BOT"), Int64(parts[0].dropFirst(3)) != nil,
              Int64(parts[1]) != nil, !parts[2].isEmpty else { return false }
        return parts[2].utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }
    }

    public var machine: PaymentMachine {
        PaymentMachine(status: status, amountCents: amountCents)
    }
}

public struct UTM: Sendable, Equatable {
    public var source = "", medium = "", campaign = "", content = "", term = ""
    public init() {}
}

extension Payment {
    /// Every column the repository selects, in the shape `init(row:)` reads.
    static let columns = """
        id, status, gateway, bot_id, telegram_user_id, amount_cents, description,
        customer_name, customer_email, customer_phone, customer_document, coalesce(gateway_transaction_id, '') AS txid,
        gateway_hash, pix_code, qr_code_base64, expires_at_ms, tracking_token, token_source, fbclid,
        utm_source, utm_medium, utm_campaign, utm_content, utm_term, coalesce(idempotency_key, '') AS idem,
        request_fingerprint, flagged, review_reason, gateway_message, checks, reconcile_done,
        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
        (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms,
        coalesce((extract(epoch FROM paid_at) * 1000)::bigint, 0) AS paid_ms
        """

    init(row r: PGRow) throws {
        guard let status = PaymentStatus(rawValue: try r.string("status") ?? "") else {
            throw PGError(.decoding, "unknown payment status")
        }
        id = try r.int64("id") ?? 0
        self.status = status
        gateway = try r.string("gateway") ?? ""
        botID = try r.int64("bot_id") ?? 0
        telegramUserID = try r.int64("telegram_user_id") ?? 0
        amountCents = try r.int64("amount_cents") ?? 0
        description = try r.string("description") ?? ""
        customer = GatewayCustomer(name: try r.string("customer_name") ?? "", email: try r.string("customer_email") ?? "",
                                   phone: try r.string("customer_phone") ?? "", document: try r.string("customer_document") ?? "")
        transactionID = try r.string("txid") ?? ""
        gatewayHash = try r.string("gateway_hash") ?? ""
        pixCode = try r.string("pix_code") ?? ""
        qrCodeBase64 = try r.string("qr_code_base64") ?? ""
        expiresAtMs = try r.int64("expires_at_ms") ?? 0
        trackingToken = try r.string("tracking_token") ?? ""
        tokenSource = Int32(try r.int64("token_source") ?? 0)
        fbclid = try r.string("fbclid") ?? ""
        utm.source = try r.string("utm_source") ?? ""
        utm.medium = try r.string("utm_medium") ?? ""
        utm.campaign = try r.string("utm_campaign") ?? ""
        utm.content = try r.string("utm_content") ?? ""
        utm.term = try r.string("utm_term") ?? ""
        idempotencyKey = try r.string("idem") ?? ""
        requestFingerprint = try r.string("request_fingerprint") ?? ""
        flagged = try r.bool("flagged") ?? false
        reviewReason = try r.string("review_reason") ?? ""
        gatewayMessage = try r.string("gateway_message") ?? ""
        checks = try r.int("checks") ?? 0
        reconcileDone = try r.bool("reconcile_done") ?? false
        createdAtMs = try r.int64("created_ms") ?? 0
        updatedAtMs = try r.int64("updated_ms") ?? 0
        paidAtMs = try r.int64("paid_ms") ?? 0
    }

    /// `pixtrack.v1.Payment` (proto3: fields at their default are not written).
    public var message: Pixtrack_V1_Payment {
        var m = Pixtrack_V1_Payment()
        m.id = id
        m.reference = reference
        m.status = Pixtrack_V1_PaymentStatus(rawValue: status.protoNumber)
        m.gateway = gateway
        m.gatewayTransactionId = transactionID
        m.gatewayHash = gatewayHash
        m.botId = botID
        m.telegramUserId = telegramUserID
        m.amountCents = amountCents
        m.description = description
        let c = customer
        if !(c.name.isEmpty && c.email.isEmpty && c.phone.isEmpty && c.document.isEmpty) {
            var pc = Pixtrack_V1_Customer()
            pc.name = c.name
            pc.email = c.email
            pc.phone = c.phone
            pc.document = c.document
            m.customer = pc
        }
        m.pixCode = pixCode
        m.qrCodeBase64 = qrCodeBase64
        m.expiresAtUnixMs = expiresAtMs
        m.trackingToken = trackingToken
        m.tokenSource = Pixtrack_V1_TokenSource(rawValue: tokenSource)
        m.flaggedForReview = flagged
        m.reviewReason = reviewReason
        m.idempotencyKey = idempotencyKey
        m.gatewayMessage = gatewayMessage
        m.createdAtUnixMs = createdAtMs
        m.updatedAtUnixMs = updatedAtMs
        m.paidAtUnixMs = paidAtMs
        return m
    }
}
