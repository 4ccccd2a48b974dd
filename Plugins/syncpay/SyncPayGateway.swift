import PluginKit

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(SyncPayGateway.self, host: host)
}

/// SyncPay (DESIGN §4, observed): `POST /api/partner/v1/auth-token {client_id, client_secret}`
/// gives a Bearer token for an hour, cached per credentials and refreshed before it ends (one
/// fetch at a time, whatever the concurrency); amounts in **reais** (decimal); paid is
/// `completed` or `PAID_OUT`; the webhook's event type is in the `event` header.
/// Configuration: credentials `client_id`, `client_secret`; option `token_margin_seconds`
/// (refresh this long before expiry, default 300).
final class SyncPayGateway: GatewayPlugin {
    static let name = "syncpay"
    static let version = "1.0.0"
    static let summary = "SyncPay PIX (Bearer token per credentials, amounts in reais)"
    static let capabilities: PluginCapabilities = [.webhooks]
    static let defaultBaseURL = "https://api.syncpayments.com.br"

    /// Shared by every instance of this plugin in the process: same credentials, same token.
    static let tokens = TokenCache()

    let baseURL: String
    let clientID: String
    let clientSecret: String
    let marginMs: Int64
    let cacheKey: String

    init(config: PluginConfiguration, host: HostCall) throws(PluginError) {
        clientID = try config.credential("client_id")
        clientSecret = try config.credential("client_secret")
        baseURL = try config.baseURL(default: Self.defaultBaseURL)
        marginMs = try config.intOption("token_margin_seconds", default: 300) * 1000
        cacheKey = "\(baseURL)\u{1}\(clientID)\u{1}\(clientSecret)"
    }

    // MARK: - Token

    private func token(_ host: HostCall) throws(PluginError) -> String {
        try Self.tokens.token(key: cacheKey, now: { host.monotonicMs }, marginMs: marginMs, waitMs: host.remainingMs) { () throws(PluginError) -> TokenCache.Token in
            let body: JSON = .object(["client_id": .string(clientID), "client_secret": .string(clientSecret)])
            let r = host.http(.json("POST", "\(baseURL)/api/partner/v1/auth-token", body, noSideEffects: true))
            guard r.answered else { throw r.sent ? .unavailable("token request: no answer (\(r.error))") : .unavailable("token request not sent (\(r.error)): \(r.errorMessage)") }
            guard (200..<300).contains(r.status) else {
                throw r.status == 401 || r.status == 403 ? .config("SyncPay refused the credentials (HTTP \(r.status))")
                                                          : .unavailable("token request: HTTP \(r.status)")
            }
            guard let j = r.json, let value = j["access_token"]?.string, !value.isEmpty else {
                throw .gateway("token answer without access_token")
            }
            let lifetime = j["expires_in"]?.int64 ?? 3600
            host.log(.debug, "SyncPay token refreshed (expires in \(lifetime) s)")
            return TokenCache.Token(value: value, expiresAtMs: host.monotonicMs + max(1, lifetime) * 1000)
        }
    }

    /// Sends `make(token)`; on 401 forgets the token, fetches a new one and sends once more
    /// (a 401 means the gateway did not process the request).
    private func authorized(_ host: HostCall, _ make: (String) -> PluginHTTPRequest) throws(PluginError) -> PluginHTTPResponse {
        let first = try token(host)
        let r = host.http(make(first))
        guard r.answered, r.status == 401 else { return r }
        Self.tokens.invalidate(key: cacheKey, token: first)
        host.log(.info, "SyncPay answered 401: token refreshed and request retried")
        return host.http(make(try token(host)))
    }

    // MARK: - Calls

    func createPix(_ r: PixRequest, host: HostCall) throws(PluginError) -> PixResult {
        guard r.amountCents > 0 else { throw .invalidArgument("amount must be positive") }
        let tokenValue: String
        do {
            tokenValue = try token(host)
        } catch {
            // Only the token request may have left: the charge itself certainly was not sent.
            if error.code == 2 { return PixResult(.declined, message: error.message) }
            return PixResult(.notSent, message: "no token: \(error.message)")
        }
        let body: JSON = .object([
            "amount": .reais(cents: r.amountCents),
            "description": .string(r.description.isEmpty ? r.reference : r.description),
            "webhook_url": .string(r.postbackURL),
            "external_reference": .string(r.reference),
            "client": .object([
                "name": .string(r.customer.name), "cpf": .string(GatewaySupport.digits(r.customer.document)),
                "email": .string(r.customer.email), "phone": .string(GatewaySupport.digits(r.customer.phone)),
            ]),
        ])
        let make = { (t: String) in
            PluginHTTPRequest.json("POST", "\(self.baseURL)/api/partner/v1/cash-in", body, headers: [HeaderField("Authorization", "Bearer \(t)")])
        }
        var answer = host.http(make(tokenValue))
        if answer.answered, answer.status == 401 {
            Self.tokens.invalidate(key: cacheKey, token: tokenValue)
            host.log(.info, "SyncPay answered 401: token refreshed and request retried")
            do {
                answer = host.http(make(try token(host)))
            } catch {
                return PixResult(.declined, message: "token refused and no new one: \(error.message)")
            }
        }
        switch GatewaySupport.classifyCreate(answer) {
        case .settled(let result):
            return result
        case .json(let j, _):
            let data = j["data"]?.object != nil ? j["data"]! : j
            guard let id = data["identifier"]?.text ?? data["id"]?.text, !id.isEmpty else {
                return PixResult(.unknown, message: "answer without identifier: \(j["message"]?.text ?? "")")
            }
            return GatewaySupport.created(transactionID: id, pixCode: data["pix_code"]?.string ?? "",
                                          amountCents: r.amountCents)
        }
    }

    func getStatus(_ r: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult {
        guard !r.transactionID.isEmpty else { throw .unsupported("SyncPay looks charges up by identifier only") }
        let url = "\(baseURL)/api/partner/v1/transaction/\(GatewaySupport.percentEncode(r.transactionID))"
        let answer = try authorized(host) { t in
            .json("GET", url, nil, headers: [HeaderField("Authorization", "Bearer \(t)")], noSideEffects: true)
        }
        guard let j = try GatewaySupport.statusAnswer(answer) else { return StatusResult(.notFound) }
        let data = j["data"]?.object != nil ? j["data"]! : j
        let raw = data["status"]?.text ?? ""
        var s = StatusResult(Self.status(raw), rawStatus: raw)
        // Reais on the wire; a value that is not an exact decimal leaves the amount unknown (0).
        s.amountCents = data["amount"]?.centsFromReais ?? 0
        s.transactionID = data["reference_id"]?.text ?? data["id"]?.text ?? r.transactionID
        s.reference = Self.reference(data)
        if s.status == .paid {
            s.paidAtUnixMs = (data["paid_at"]?.text ?? data["transaction_date"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0
        }
        return s
    }

    /// The transaction comes bare or under `data`; the reference as `external_reference` or
    /// `externalreference`; amounts are reais, as JSON numbers (`33.8`) or strings (`"33.80"`).
    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        let j = try GatewaySupport.webhookObject(w.body)
        let levels = GatewaySupport.levels(j)
        let data = levels.last ?? j
        let id = GatewaySupport.text(data, ["id", "identifier", "reference_id"]) ?? ""
        let reference = levels.reversed().lazy.map(Self.reference).first { !$0.isEmpty } ?? ""
        guard !id.isEmpty || !reference.isEmpty else { throw .invalidArgument("webhook without transaction id or reference") }
        let raw = data["status"]?.text ?? ""
        let event = w.headers.value("event") ?? ""
        let mapped = Self.status(raw)
        var out = WebhookResult()
        out.transactionID = id
        out.reference = reference
        out.status = GatewaySupport.reversal(mapped, markers: levels)
        out.rawStatus = raw
        out.amountCents = data["amount"]?.centsFromReais ?? 0
        out.eventID = "\(event.isEmpty ? "cashin" : event):" + GatewaySupport.eventID(id.isEmpty ? reference : id, rawStatus: raw,
                                                                                      status: out.status, mapped: mapped)
        return out
    }

    /// Our reference: `external_reference`, or `externalreference` as some accounts send it.
    static func reference(_ t: JSON) -> String {
        GatewaySupport.text(t, ["external_reference", "externalreference", "externalReference"]) ?? ""
    }

    /// `completed` and `PAID_OUT` are paid; `MED` (the PIX special return mechanism) is a
    /// chargeback; anything unlisted is UNKNOWN.
    static func status(_ s: String) -> PixStatus {
        switch s.lowercased() {
        case "pending", "waiting_payment", "waiting", "processing", "created": .pending
        case "completed", "paid_out", "paid", "approved": .paid
        case "failed", "canceled", "cancelled", "refused", "rejected": .failed
        case "expired": .expired
        case "refunded", "returned": .refunded
        case "med", "chargeback", "chargedback", "infraction": .chargeback
        default: .unknown
        }
    }
}
