import PluginKit

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(AtomoPayGateway.self, host: host)
}

/// ÁtomoPay (DESIGN §4, observed): `?api_token=` on every call, amounts in centavos, charges
/// looked up by `hash`. Configuration: credential `api_token`; options `offer_hash`,
/// `product_hash` (required by the create call), optional `expire_in_days`.
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
        case .json(let j, _):
            let status = (j["payment_status"]?.text ?? "").lowercased()
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
        let hash = r.gatewayHash.isEmpty ? r.transactionID : r.gatewayHash
        guard !hash.isEmpty else { throw .unsupported("ÁtomoPay looks charges up by hash only") }
        let answer = host.http(.json("GET", url("/transactions/\(GatewaySupport.percentEncode(hash))"), nil, noSideEffects: true))
        guard let j = try GatewaySupport.statusAnswer(answer) else { return StatusResult(.notFound) }
        let raw = j["payment_status"]?.text ?? ""
        var s = StatusResult(Self.status(raw.lowercased()), rawStatus: raw)
        s.amountCents = j["amount"]?.int64 ?? 0
        s.transactionID = j["id"]?.text ?? hash
        if s.status == .paid {
            s.paidAtUnixMs = (j["paid_at"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0
        }
        return s
    }

    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        guard let j = try? JSON.parse(w.body), j.object != nil else { throw .invalidArgument("webhook body is not a JSON object") }
        // Some deliveries wrap the transaction in `data`.
        let t = j["data"]?.object != nil ? j["data"]! : j
        guard let hash = t["hash"]?.text ?? t["transaction_hash"]?.text, !hash.isEmpty else {
            throw .invalidArgument("webhook without a transaction hash")
        }
        let raw = t["payment_status"]?.text ?? t["status"]?.text ?? ""
        var out = WebhookResult()
        out.transactionID = t["id"]?.text ?? hash
        out.reference = t["reference"]?.text ?? t["tracking"]?["src"]?.text ?? ""
        out.status = Self.status(raw.lowercased())
        out.rawStatus = raw
        out.amountCents = t["amount"]?.int64 ?? 0
        out.eventID = "\(hash):\(raw.lowercased())"
        return out
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
