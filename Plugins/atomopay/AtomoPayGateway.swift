import PluginKit

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(AtomoPayGateway.self, host: host)
}

/// ÁtomoPay (observed, see docs/gateways.md): `?api_token=` on every call, amounts in centavos,
/// charges looked up by `hash`. A charge has a numeric `id` (our transaction id) and a `hash`
/// (our gateway hash). Answers and webhooks come bare or wrapped (`data`, `transaction`,
/// `payload`, `{"success": true, "data": …}`); webhooks carry `id`+`hash`, `transaction_hash`
/// +`status`, or `id`+`payment_status`. Configuration: credential `api_token`; options
/// `offer_hash`, `product_hash` (required by the create call), optional `expire_in_days`.
final class AtomoPayGateway: GatewayPlugin {
    static let name = "atomopay"
    static let version = "1.0.0"
    static let summary = "ÁtomoPay PIX (api_token query auth, amounts in centavos)"
    static let capabilities: PluginCapabilities = [.webhooks]
    static let defaultBaseURL = "https://api.atomopay.com.br/api/public/v1"

    let baseURL: String
    let token: String
    let offerHash: String
    let productHash: String
    let expireInDays: Int64

    init(config: PluginConfiguration, host: HostCall) throws(PluginError) {
        token = try config.credential("api_token")
        baseURL = try config.baseURL(default: Self.defaultBaseURL)
        guard let offer = config.options["offer_hash"], !offer.isEmpty else { throw .config("missing option 'offer_hash'") }
        offerHash = offer
        productHash = config.options["product_hash"].flatMap { $0.isEmpty ? nil : $0 } ?? offer
        expireInDays = try config.intOption("expire_in_days", default: 1)
    }

    private func url(_ path: String) -> String {
        "\(baseURL)\(path)?api_token=\(GatewaySupport.percentEncode(token))"
    }

    func createPix(_ r: PixRequest, host: HostCall) throws(PluginError) -> PixResult {
        guard r.amountCents > 0 else { throw .invalidArgument("amount must be positive") }
        let body: JSON = .object([
            "amount": .int(r.amountCents),
            "offer_hash": .string(offerHash),
            "payment_method": .string("pix"),
            "installments": .int(1),
            "expire_in_days": .int(expireInDays),
            "transaction_origin": .string("api"),
            "reference": .string(r.reference),
            "postback_url": .string(r.postbackURL),
            "customer": .object([
                "name": .string(r.customer.name), "email": .string(r.customer.email),
                "phone_number": .string(GatewaySupport.digits(r.customer.phone)),
                "document": .string(GatewaySupport.digits(r.customer.document)),
            ]),
            "cart": .array([.object([
                "product_hash": .string(productHash), "title": .string(r.description.isEmpty ? r.reference : r.description),
                "price": .int(r.amountCents), "quantity": .int(1), "operation_type": .int(1), "tangible": .bool(false),
            ])]),
            "tracking": .object(["src": .string(r.reference)]),
        ])
        let answer = host.http(.json("POST", url("/transactions"), body))
        switch GatewaySupport.classifyCreate(answer) {
        case .settled(let result):
            return result
        case .json(let body, _):
            let j = Self.unwrap(body).last ?? body
            let status = (j["payment_status"]?.text ?? j["status"]?.text ?? "").lowercased()
            let mapped = Self.status(status)
            guard let hash = j["hash"]?.text, !hash.isEmpty else {
                if mapped == .failed { return PixResult(.declined, message: "payment_status \(status)") }
                return PixResult(.unknown, message: "answer without a transaction hash")
            }
            if mapped == .failed {
                var d = PixResult(.declined, message: "payment_status \(status)")
                d.transactionID = j["id"]?.text ?? hash
                d.gatewayHash = hash
                return d
            }
            return GatewaySupport.created(
                transactionID: j["id"]?.text ?? hash, gatewayHash: hash,
                pixCode: j["pix"]?["pix_qr_code"]?.string ?? "",
                qrCodeBase64: j["pix"]?["qr_code_base64"]?.string ?? "",
                expiresAtUnixMs: (j["pix"]?["expiration_date"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0,
                amountCents: r.amountCents)
        }
    }

    func getStatus(_ r: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult {
        // Looked up by hash; without one, by the transaction id (the only other id we hold).
        let key = r.gatewayHash.isEmpty ? r.transactionID : r.gatewayHash
        guard !key.isEmpty else { throw .unsupported("ÁtomoPay looks charges up by hash only") }
        let answer = host.http(.json("GET", url("/transactions/\(GatewaySupport.percentEncode(key))"), nil, noSideEffects: true))
        guard let body = try GatewaySupport.statusAnswer(answer) else { return StatusResult(.notFound) }
        let levels = Self.unwrap(body)
        let j = levels.last ?? body
        let raw = j["payment_status"]?.text ?? j["status"]?.text ?? ""
        let mapped = Self.status(raw.lowercased())
        var s = StatusResult(GatewaySupport.reversal(mapped, markers: levels), rawStatus: raw)
        s.amountCents = j["amount"]?.int64 ?? 0
        s.transactionID = GatewaySupport.text(j, ["id"]) ?? r.transactionID
        s.gatewayHash = GatewaySupport.text(j, ["hash", "transaction_hash"]) ?? ""
        s.reference = Self.reference(j)
        if s.status == .paid {
            s.paidAtUnixMs = (j["paid_at"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0
        }
        return s
    }

    /// Observed webhook shapes: `id` + `hash` + `payment_status`; `transaction_hash` + `status`
    /// (no `id`); `id` + `payment_status` (no hash); each possibly wrapped (see `unwrap`). The
    /// transaction id is only ever the numeric `id`, the hash only `hash`/`transaction_hash`; the
    /// host matches on whichever is present, then on the reference.
    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        let body = try GatewaySupport.webhookObject(w.body)
        let levels = Self.unwrap(body)
        let t = levels.last ?? body
        let id = GatewaySupport.text(t, ["id"]) ?? ""
        let hash = GatewaySupport.text(t, ["hash", "transaction_hash"]) ?? ""
        let reference = Self.reference(t)
        guard !id.isEmpty || !hash.isEmpty || !reference.isEmpty else {
            throw .invalidArgument("webhook without a transaction id, hash or reference")
        }
        let raw = t["payment_status"]?.text ?? t["status"]?.text ?? ""
        let mapped = Self.status(raw.lowercased())
        var out = WebhookResult()
        out.transactionID = id
        out.gatewayHash = hash
        out.reference = reference
        out.status = GatewaySupport.reversal(mapped, markers: levels)
        out.rawStatus = raw
        out.amountCents = t["amount"]?.int64 ?? 0
        // Hash first: the id this plugin has always keyed its events on.
        out.eventID = GatewaySupport.eventID(hash.isEmpty ? (id.isEmpty ? reference : id) : hash,
                                             rawStatus: raw, status: out.status, mapped: mapped)
        return out
    }

    /// The nesting levels of a body, outermost first, down to the transaction: a level holding
    /// none of `id`, `hash`, `transaction_hash`, `payment_status` but an object under `data`,
    /// `transaction` or `payload` is a wrapper (at most 4 levels deep).
    static func unwrap(_ body: JSON) -> [JSON] {
        var levels = [body]
        var node = body
        while levels.count < 5, ["id", "hash", "transaction_hash", "payment_status"].allSatisfy({ node[$0] == nil }),
              let inner = ["data", "transaction", "payload"].lazy.compactMap({ node[$0] }).first(where: { $0.object != nil }) {
            node = inner
            levels.append(inner)
        }
        return levels
    }

    /// Our reference as ÁtomoPay echoes it (`reference`, or `tracking.src` where create put it);
    /// empty when absent.
    static func reference(_ t: JSON) -> String {
        GatewaySupport.text(t, ["reference"]) ?? GatewaySupport.text(t["tracking"], ["src"]) ?? ""
    }

    /// Every status word seen from ÁtomoPay; anything else is UNKNOWN (never paid).
    static func status(_ s: String) -> PixStatus {
        switch s {
        case "waiting_payment", "pending", "processing", "authorized", "created": .pending
        case "paid", "approved": .paid
        case "refused", "failed", "canceled", "cancelled", "rejected": .failed
        case "expired": .expired
        case "refunded", "partially_refunded": .refunded
        case "chargeback", "chargedback", "in_protest", "dispute": .chargeback
        default: .unknown
        }
    }
}
