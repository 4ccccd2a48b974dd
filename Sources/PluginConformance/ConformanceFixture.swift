import PluginHost
import PluginKit

/// A plugin's recorded exchange with its gateway (`conformance.json`), which
/// `pixtrack plugin check --config` replays. Format (all keys optional unless noted):
///
/// ```json
/// {
///   "plugin": "atomopay",                       // expected plugin name
///   "config": {"credentials": {…}, "options": {…}, "base_path": "/api/v1"},
///   "network": true,                            // false: the plugin makes no HTTP (skip those checks)
///   "timeout_ms": 5000,
///   "steps": [                                  // required
///     {"call": "create_pix" | "get_status" | "parse_webhook",
///      "request": {…},                          // CreatePixRequest / GetStatusRequest fields, or
///                                               // {"headers": {…}, "body_json": {…} | "body": "…"}
///      "http": [{"expect": {"method", "path", "query": {…}, "headers": {…}, "json": {…}},
///                "respond": {"status", "headers": {…}, "json": {…} | "body": "…" | "reset": true}}],
///      "expect": {"outcome" | "status" | "transaction_id" | "gateway_hash" | "reference" |
///                 "rejected" (parse_webhook: true when the plugin refused the body) |
///                 "event_id" | "amount_cents": …}}
///   ]
/// }
/// ```
/// The base URL given to the plugin is the replay server plus `base_path`; `expect.path` is
/// relative to it. `expect.json` matches as a subset; a header value `"*"` only requires presence.
public struct ConformanceFixture: Sendable {
    public let json: JSON

    public init(json: JSON) throws(ConformanceError) {
        guard json["steps"]?.array != nil else { throw ConformanceError("fixture has no \"steps\" array") }
        self.json = json
    }

    public init(bytes: [UInt8]) throws(ConformanceError) {
        let parsed: JSON
        do {
            parsed = try JSON.parse(bytes)
        } catch {
            throw ConformanceError("fixture is not valid JSON: \(error)")
        }
        try self.init(json: parsed)
    }

    var pluginName: String? { json["plugin"]?.string }
    var network: Bool { json["network"]?.bool ?? true }
    var timeoutMs: Int64 { json["timeout_ms"]?.int64 ?? 5_000 }
    var steps: [JSON] { json["steps"]?.array ?? [] }

    func config(baseURL: String) -> GatewayConfig {
        let c = json["config"]
        return GatewayConfig(credentials: Self.stringMap(c?["credentials"]), baseURL: baseURL + (c?["base_path"]?.string ?? ""),
                             options: Self.stringMap(c?["options"]))
    }

    static func stringMap(_ j: JSON?) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in j?.object ?? [:] { out[k] = v.text ?? v.bool.map { $0 ? "true" : "false" } ?? "" }
        return out
    }

    static func createRequest(_ j: JSON?) -> CreatePixRequest {
        let c = j?["customer"]
        return CreatePixRequest(
            reference: j?["reference"]?.text ?? "PAY-1", amountCents: j?["amount_cents"]?.int64 ?? 1990,
            description: j?["description"]?.text ?? "", postbackURL: j?["postback_url"]?.text ?? "",
            customer: GatewayCustomer(name: c?["name"]?.text ?? "", email: c?["email"]?.text ?? "",
                                      phone: c?["phone"]?.text ?? "", document: c?["document"]?.text ?? ""))
    }

    static func statusQuery(_ j: JSON?) -> StatusQuery {
        StatusQuery(transactionID: j?["transaction_id"]?.text ?? "", reference: j?["reference"]?.text ?? "",
                    gatewayHash: j?["gateway_hash"]?.text ?? "")
    }

    static func webhook(_ j: JSON?) -> WebhookRequest {
        let headers = stringMap(j?["headers"]).sorted { $0.key < $1.key }.map { GatewayHeader($0.key, $0.value) }
        let body = j?["body_json"].map { $0.bytes } ?? Array((j?["body"]?.string ?? "").utf8)
        return WebhookRequest(headers: headers, body: body)
    }

    static func response(_ j: JSON?) -> ReplayServer.Response {
        guard let j else { return .answer(status: 500, headers: [:], body: []) }
        if j["reset"]?.bool == true { return .reset }
        var headers = stringMap(j["headers"])
        let body: [UInt8]
        if let json = j["json"] {
            body = json.bytes
            if headers.keys.allSatisfy({ $0.lowercased() != "content-type" }) { headers["Content-Type"] = "application/json" }
        } else {
            body = Array((j["body"]?.string ?? "").utf8)
        }
        return .answer(status: Int(j["status"]?.int64 ?? 200), headers: headers, body: body)
    }
}

extension CreatePixRequest {
    init(reference: String, amountCents: Int64, description: String, postbackURL: String, customer: GatewayCustomer) {
        self.init(reference: reference, amountCents: amountCents, description: description, customer: customer, postbackURL: postbackURL)
    }
}
