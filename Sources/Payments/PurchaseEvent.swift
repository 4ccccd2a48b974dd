import JSONKit
import MetaCAPI
import Postgres

/// The Meta Purchase of a paid payment (DESIGN §1, §3). Reais appear only here, at the Meta
/// boundary; everywhere else amounts are integer centavos.
public enum PurchaseEvent {
    /// `purchase_` + payment id: stable, so Meta deduplicates retries and the outbox refuses a twin.
    public static func eventID(_ paymentID: Int64) -> String { "purchase_\(paymentID)" }

    /// The event for `payment` (which must carry its paid time), or nil when the bot has no pixel.
    public static func make(_ payment: Payment, account: BotGatewayAccount?, tracking: TrackingSnapshot?) -> MetaEvent? {
        guard let account, !account.metaPixelID.isEmpty else { return nil }
        let t = tracking ?? TrackingSnapshot()
        let fbclid = t.fbclid.isEmpty ? payment.fbclid : t.fbclid
        let paidMs = payment.paidAtMs > 0 ? payment.paidAtMs : payment.updatedAtMs
        let visitor = MetaEvent.WebsiteVisitor(clientIP: t.clientIP, userAgent: t.userAgent, fbp: t.fbp, fbc: t.fbc,
                                               externalIDs: [fbclid, String(payment.telegramUserID)])
        return MetaEvent.website(pixelID: account.metaPixelID, eventName: MetaEvent.purchaseName, eventID: eventID(payment.id),
                                 eventTime: paidMs / 1000, eventSourceURL: t.eventSourceURL, visitor: visitor,
                                 customData: ["currency": "BRL", "value": .reais(cents: payment.amountCents),
                                              "order_id": .string(payment.reference)],
                                 testEventCode: account.metaTestEventCode)
    }

    /// The number Meta reads from `custom_data.value`, in reais (`1990` → `19.9`). The payload
    /// itself carries the exact decimal text (`19.90`, `JSON.reais(cents:)`).
    public static func reais(_ cents: Int64) -> Double { Double(cents) / 100 }

    /// Queues the Purchase on `connection` (inside the payment's transaction). Returns whether
    /// an event was queued (false: no pixel configured, or already queued).
    public static func enqueue(_ payment: Payment, account: BotGatewayAccount?, tracking: TrackingSnapshot?,
                               on connection: PGConnection) throws -> Bool {
        guard let event = make(payment, account: account, tracking: tracking) else { return false }
        return try MetaOutbox.enqueue([event], on: connection) == 1
    }
}
