import PluginKit

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(ParadiseGateway.self, host: host)
}

/// Paradise (DESIGN §4, observed): header `X-API-Key`, amounts in centavos, a unique `reference`
/// per charge (our `PAY-{id}`), status by `transaction_id`. Configuration: credential `api_key`;
/// option `product_hash` (required by the create call).
final class ParadiseGateway: GatewayPlugin {
    static let name = "paradise"
    static let version = "1.0.0"
    static let summary = "Paradise PIX (X-API-Key, amounts in centavos)"
    static let capabilities: PluginCapabilities = [.webhooks]
    static let defaultBaseURL = "https://multi.paradisepags.com/api/v1"

    let baseURL: String
    let apiKey: String
    let productHash: String

    init(config: PluginConfiguration, host: HostCall) throws(PluginError) {
        apiKey = try config.credential("api_key")
        baseURL = try config.baseURL(default: Self.defaultBaseURL)
        guard let p = config.options["product_hash"], !p.isEmpty else { throw .config("missing option 'product_hash'") }
        productHash = p
    }

    private var auth: [HeaderField] { [HeaderField("X-API-Key", apiKey)] }

    func createPix(_ r: PixRequest, host: HostCall) throws(PluginError) -> PixResult {
        guard r.amountCents > 0 else { throw .invalidArgument("amount must be positive") }
        let body: JSON = .object([
            "amount": .int(r.amountCents),
            "description": .string(r.description.isEmpty ? r.reference : r.description),
            "reference": .string(r.reference),
            "productHash": .string(productHash),
            "postback_url": .string(r.postbackURL),
            "customer": .object([
                "name": .string(r.customer.name), "email": .string(r.customer.email),
                "phone": .string(GatewaySupport.digits(r.customer.phone)),
                "document": .string(GatewaySupport.digits(r.customer.document)),
            ]),
        ])
        let answer = host.http(.json("POST", "\(baseURL)/transaction.php", body, headers: auth))
        switch GatewaySupport.classifyCreate(answer) {
        case .settled(let result):
            return result
        case .json(let j, _):
            // Paradise answers some refusals with HTTP 200 and {"status": "error"}.
            if let s = j["status"]?.text?.lowercased(), s == "error" || s == "failed" || s == "refused" {
                return PixResult(.declined, message: j["message"]?.text ?? "status \(s)")
            }
            guard let tid = j["transaction_id"]?.text, !tid.isEmpty else {
                return PixResult(.unknown, message: "answer without transaction_id")
            }
            if let echoed = j["id"]?.text, !echoed.isEmpty, echoed != r.reference {
                var u = PixResult(.unknown, message: "answer is for reference \(echoed), not \(r.reference)")
                u.transactionID = tid
                return u
            }
            return GatewaySupport.created(
                transactionID: tid, pixCode: j["qr_code"]?.string ?? "",
                qrCodeBase64: j["qr_code_base64"]?.string ?? "",
                expiresAtUnixMs: (j["expires_at"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0,
                amountCents: r.amountCents)
        }
    }

    func getStatus(_ r: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult {
        guard !r.transactionID.isEmpty else { throw .unsupported("Paradise looks charges up by transaction id only") }
        let url = "\(baseURL)/check_status.php?hash=\(GatewaySupport.percentEncode(r.transactionID))"
        let answer = host.http(.json("GET", url, nil, headers: auth, noSideEffects: true))
        guard let body = try GatewaySupport.statusAnswer(answer) else { return StatusResult(.notFound) }
        let j = GatewaySupport.levels(body).last ?? body
        let raw = j["status"]?.text ?? j["payment_status"]?.text ?? ""
        if raw.lowercased() == "error" || raw.lowercased() == "not_found" {
            return StatusResult(.notFound, rawStatus: raw)
        }
        var s = StatusResult(Self.status(raw.lowercased()), rawStatus: raw)
        s.amountCents = j["amount"]?.int64 ?? 0
        s.transactionID = j["transaction_id"]?.text ?? r.transactionID
        // Paradise echoes our reference as `id` next to `transaction_id` (newer answers also as
        // `external_id`).
        s.reference = GatewaySupport.text(j, ["external_id", "reference"])
            ?? (j["transaction_id"] != nil ? GatewaySupport.text(j, ["id"]) : nil) ?? ""
        if s.status == .paid {
            s.paidAtUnixMs = (j["paid_at"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0
        }
        return s
    }

    /// Two shapes are in use: the newer `transaction_id` / `external_id` / `status`, and the
    /// older `id` / `payment_status`, where `id` is the transaction id (or, on some accounts, our
    /// reference). Either may be wrapped in `data`.
    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        let body = try GatewaySupport.webhookObject(w.body)
        let levels = GatewaySupport.levels(body)
        let j = levels.last ?? body
        let legacyID = j["id"]?.text ?? ""
        let tid = GatewaySupport.text(j, ["transaction_id"]) ?? (GatewaySupport.isReference(legacyID) ? "" : legacyID)
        let reference = Self.reference(j)
        guard !tid.isEmpty || !reference.isEmpty else { throw .invalidArgument("webhook without transaction_id, id or external_id") }
        let raw = j["status"]?.text ?? j["payment_status"]?.text ?? ""
        let mapped = Self.status(raw.lowercased())
        var out = WebhookResult()
        out.transactionID = tid
        out.reference = reference
        out.status = GatewaySupport.reversal(mapped, markers: levels)
        out.rawStatus = raw
        out.amountCents = j["amount"]?.int64 ?? 0
        out.eventID = j["webhook_id"]?.text
            ?? GatewaySupport.eventID(tid.isEmpty ? reference : tid, rawStatus: raw, status: out.status, mapped: mapped)
        return out
    }

    /// Our `PAY-{id}`: `external_id`, `reference`, or an `id` that has its shape.
    static func reference(_ j: JSON) -> String {
        if let r = GatewaySupport.text(j, ["external_id", "reference"]) { return r }
        let id = j["id"]?.text ?? ""
        return GatewaySupport.isReference(id) ? id : ""
    }

    /// Webhooks say `approved`, the status API `paid`; anything unlisted is UNKNOWN.
    static func status(_ s: String) -> PixStatus {
        switch s {
        case "pending", "waiting_payment", "waiting", "processing", "created": .pending
        case "paid", "approved", "completed": .paid
        case "failed", "refused", "canceled", "cancelled", "declined", "rejected": .failed
        case "expired": .expired
        case "refunded": .refunded
        case "chargeback", "chargedback", "med": .chargeback
        default: .unknown
        }
    }
}
