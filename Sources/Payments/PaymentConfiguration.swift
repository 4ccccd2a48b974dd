/// Settings of the payments half (see `PaymentWiring` for the environment variables).
public struct PaymentConfiguration: Sendable {
    /// Largest amount GeneratePix accepts, centavos (default R$ 100,000.00).
    public var maxAmountCents: Int64 = 10_000_000
    /// The host timeout of gateway calls; pending_verification rows younger than this (plus a
    /// margin) are left alone by the reconciler: their call may still be running.
    public var gatewayTimeoutMs: Int64 = 5_000
    /// Webhook secret per gateway name (the `{secret}` path segment).
    public var webhookSecrets: [String: String] = [:]
    /// `https://host` the gateways can reach; postback URLs are `{base}/webhooks/{gateway}/{secret}`.
    public var publicBaseURL = ""
    /// Reconciler: how often it looks for due payments, how many per pass, and the schedule.
    public var reconcileIntervalMs: Int64 = 5_000
    public var reconcileBatch = 50
    /// Delay before check n (1-based) is `min(base * 2^(n-1), max)`.
    public var reconcileBackoffBaseMs: Int64 = 30_000
    public var reconcileBackoffMaxMs: Int64 = 3_600_000
    /// After this many checks without an answer the payment is flagged for review.
    public var reconcileMaxChecks = 12
    /// Webhook processor: poll interval, retries of a webhook that matches nothing, then parked.
    public var webhookIntervalMs: Int64 = 1_000
    public var webhookMaxAttempts = 5
    /// The first retry's delay; it doubles with each attempt, up to `webhookRetryMaxMs`.
    public var webhookRetryMs: Int64 = 10_000
    public var webhookRetryMaxMs: Int64 = 3_600_000
    /// A `pending` PIX is polled until its expiry plus this grace (gateways settle late), then
    /// flagged if still pending. Without an expiry from the gateway, `pendingLifetimeMs` after
    /// its creation stands in for it.
    public var pendingGraceMs: Int64 = 3_600_000
    public var pendingLifetimeMs: Int64 = 86_400_000

    /// How long a claimed webhook is left to its worker: parsing and the status check are two
    /// gateway calls under the host timeout, plus database time. Only a worker that died
    /// mid-way lets it lapse; then another instance takes the webhook over.
    public var webhookLeaseMs: Int64 { 2 * gatewayTimeoutMs + 5_000 }

    public init() {}

    /// The delay before check number `n` (1-based).
    public func backoffMs(afterCheck n: Int) -> Int64 {
        let shift = min(max(n - 1, 0), 30)
        let (v, overflow) = reconcileBackoffBaseMs.multipliedReportingOverflow(by: Int64(1) << Int64(shift))
        return overflow ? reconcileBackoffMaxMs : min(v, reconcileBackoffMaxMs)
    }

    /// The delay before a webhook's next attempt, after attempt `n` (1-based).
    public func webhookRetryDelayMs(afterAttempt n: Int) -> Int64 {
        let shift = min(max(n - 1, 0), 30)
        let (v, overflow) = webhookRetryMs.multipliedReportingOverflow(by: Int64(1) << Int64(shift))
        return overflow ? webhookRetryMaxMs : min(v, webhookRetryMaxMs)
    }

    /// Until when (Unix ms) the reconciler polls a `pending` payment.
    public func pollDeadlineMs(_ p: Payment) -> Int64 {
        (p.expiresAtMs > 0 ? p.expiresAtMs : p.createdAtMs + pendingLifetimeMs) + pendingGraceMs
    }

    public func postbackURL(gateway: String) -> String {
        guard !publicBaseURL.isEmpty, let secret = webhookSecrets[gateway] else { return "" }
        let base = publicBaseURL.hasSuffix("/") ? String(publicBaseURL.dropLast()) : publicBaseURL
        return "\(base)/webhooks/\(gateway)/\(secret)"
    }
}
