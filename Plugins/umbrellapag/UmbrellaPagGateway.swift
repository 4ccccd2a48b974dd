import PluginKit

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(UmbrellaPagGateway.self, host: host)
}

/// UmbrellaPag (observed, see docs/gateways.md): header `x-api-key`, amounts in centavos,
/// `paymentMethod: "PIX"`, `metadata` is a JSON *string* (sometimes an object), answers wrapped
/// in `data` (sometimes `data.data`); webhooks carry `objectId` and a lowercase status. A sale
/// reported `paid` next to a non-empty `refunds` list, or as a `refund` event, is refunded.
/// Configuration: credential `api_key`; optional `expires_in_days`.
final class UmbrellaPagGateway: GatewayPlugin {
    static let name = "umbrellapag"
    static let version = "1.0.0"
    static let summary = "UmbrellaPag PIX (x-api-key, amounts in centavos)"
    static let capabilities: PluginCapabilities = [.webhooks]
    static let defaultBaseURL = "https://api-gateway.umbrellapag.com/api"

    let baseURL: String
    let apiKey: String
    let expiresInDays: Int64

    init(config: PluginConfiguration, host: HostCall) throws(PluginError) {
        apiKey = try config.credential("api_key")
        baseURL = try config.baseURL(default: Self.defaultBaseURL)
        expiresInDays = try config.intOption("expires_in_days", default: 1)
    }

    private var auth: [HeaderField] { [HeaderField("x-api-key", apiKey)] }

    func createPix(_ r: PixRequest, host: HostCall) throws(PluginError) -> PixResult {
        guard r.amountCents > 0 else { throw .invalidArgument("amount must be positive") }
        let document = GatewaySupport.digits(r.customer.document)
        let metadata: JSON = .object(["reference": .string(r.reference)])
        let body: JSON = .object([
            "amount": .int(r.amountCents),
            "paymentMethod": .string("PIX"),
            "postbackUrl": .string(r.postbackURL),
            "metadata": .string(metadata.serialized),
            "pix": .object(["expiresInDays": .int(expiresInDays)]),
            "customer": .object([
                "name": .string(r.customer.name), "email": .string(r.customer.email),
                "phone": .string(GatewaySupport.digits(r.customer.phone)),
                "document": .object(["number": .string(document), "type": .string(document.count > 11 ? "CNPJ" : "CPF")]),
            ]),
            "items": .array([.object([
                "title": .string(r.description.isEmpty ? r.reference : r.description),
                "unitPrice": .int(r.amountCents), "quantity": .int(1), "tangible": .bool(false),
                "externalRef": .string(r.reference),
            ])]),
        ])
        let answer = host.http(.json("POST", "\(baseURL)/user/transactions", body, headers: auth))
        switch GatewaySupport.classifyCreate(answer) {
        case .settled(let result):
            return result
        case .json(let j, _):
            guard let data = j["data"], data.object != nil else {
                return PixResult(.unknown, message: "answer without data: \(j["message"]?.text ?? "")")
            }
            let raw = data["status"]?.text ?? ""
            let mapped = Self.status(raw.lowercased())
            let id = data["id"]?.text ?? ""
            if mapped == .failed {
                var d = PixResult(.declined, message: "status \(raw): \(data["refusedReason"]?.text ?? j["message"]?.text ?? "")")
                d.transactionID = id
                return d
            }
            return GatewaySupport.created(
                transactionID: id, pixCode: data["pix"]?["qrCode"]?.string ?? "",
                qrCodeBase64: data["pix"]?["qrCodeBase64"]?.string ?? "",
                expiresAtUnixMs: (data["pix"]?["expirationDate"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0,
                amountCents: r.amountCents)
        }
    }

    func getStatus(_ r: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult {
        guard !r.transactionID.isEmpty else { throw .unsupported("UmbrellaPag looks charges up by id only") }
        let url = "\(baseURL)/user/transactions/\(GatewaySupport.percentEncode(r.transactionID))"
        let answer = host.http(.json("GET", url, nil, headers: auth, noSideEffects: true))
        guard let j = try GatewaySupport.statusAnswer(answer) else { return StatusResult(.notFound) }
        guard j["data"]?.object != nil else { throw .gateway("answer without data") }
        let levels = GatewaySupport.levels(j)
        let data = levels.last ?? j
        let raw = data["status"]?.text ?? ""
        var s = StatusResult(GatewaySupport.reversal(Self.status(raw.lowercased()), markers: levels), rawStatus: raw)
        s.reference = Self.reference(data)
        s.amountCents = data["amount"]?.int64 ?? 0
        s.transactionID = data["id"]?.text ?? r.transactionID
        if s.status == .paid {
            s.paidAtUnixMs = (data["paidAt"]?.text).flatMap { GatewaySupport.parseTimestamp($0) } ?? 0
        }
        return s
    }

    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        let j = try GatewaySupport.webhookObject(w.body)
        let levels = GatewaySupport.levels(j)  // the body, `data`, `data.data`
        let data = levels.last ?? j
        guard let id = GatewaySupport.text(j, ["objectId"]) ?? GatewaySupport.text(data, ["id"]) else {
            throw .invalidArgument("webhook without objectId")
        }
        let raw = j["status"]?.text ?? data["status"]?.text ?? ""
        let mapped = Self.status(raw.lowercased())
        var out = WebhookResult()
        out.transactionID = id
        out.status = GatewaySupport.reversal(mapped, markers: levels)
        out.rawStatus = raw
        out.amountCents = data["amount"]?.int64 ?? j["amount"]?.int64 ?? 0
        out.reference = levels.reversed().lazy.map(Self.reference).first { !$0.isEmpty } ?? ""
        // The gateway's event id when it sends its own; else charge and status word.
        let own = j["id"]?.text ?? ""
        out.eventID = !own.isEmpty && own != id ? own : GatewaySupport.eventID(id, rawStatus: raw, status: out.status, mapped: mapped)
        return out
    }

    /// `metadata` holds our reference: a JSON string (or, on some accounts, an object).
    static func reference(_ t: JSON) -> String {
        guard let meta = t["metadata"] else { return "" }
        if meta.object != nil { return meta["reference"]?.text ?? "" }
        if let text = meta.string, let m = try? JSON.parse(Array(text.utf8)) { return m["reference"]?.text ?? "" }
        return ""
    }

    /// Status words (the API sends uppercase, webhooks lowercase); anything unlisted is UNKNOWN.
    static func status(_ s: String) -> PixStatus {
        switch s {
        case "waiting_payment", "pending", "processing", "authorized", "in_analysis": .pending
        case "paid", "approved": .paid
        case "refused", "failed", "canceled", "cancelled", "declined": .failed
        case "expired": .expired
        case "refunded": .refunded
        case "chargedback", "chargeback", "in_protest": .chargeback
        default: .unknown
        }
    }
}
