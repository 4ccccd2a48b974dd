import PixTrackMessages

/// Conversions between the public value types and the `pixtrack.v1` messages that cross the ABI.
enum GatewayProto {
    static func config(_ c: GatewayConfig) -> Pixtrack_V1_PluginConfig {
        var m = Pixtrack_V1_PluginConfig()
        m.credentials = c.credentials
        m.baseUrl = c.baseURL
        m.options = c.options
        return m
    }

    static func createRequest(_ r: CreatePixRequest) -> Pixtrack_V1_CreatePixRequest {
        var customer = Pixtrack_V1_Customer()
        customer.name = r.customer.name
        customer.email = r.customer.email
        customer.phone = r.customer.phone
        customer.document = r.customer.document
        var m = Pixtrack_V1_CreatePixRequest()
        m.reference = r.reference
        m.amountCents = r.amountCents
        m.description = r.description
        // Always present, empty or not: plugins read it without a NULL check.
        m.customer = customer
        m.postbackUrl = r.postbackURL
        return m
    }

    static func statusRequest(_ q: StatusQuery) -> Pixtrack_V1_GetStatusRequest {
        var m = Pixtrack_V1_GetStatusRequest()
        m.transactionId = q.transactionID
        m.reference = q.reference
        m.gatewayHash = q.gatewayHash
        return m
    }

    static func webhookRequest(_ w: WebhookRequest) -> Pixtrack_V1_ParseWebhookRequest {
        var m = Pixtrack_V1_ParseWebhookRequest()
        m.headers = w.headers.map {
            // Names lower-case whatever the client sent (HTTP/2 already is; the HandleWebhook
            // RPC may not be): a plugin compares them with strcmp.
            var h = Pixtrack_V1_Header()
            h.name = $0.name.lowercased()
            h.value = $0.value
            return h
        }
        m.body = w.body
        return m
    }

    static func createOutcome(_ v: Int32) -> CreateOutcome? {
        switch v {
        case 0: .unknown
        case 1: .created
        case 2: .declined
        case 3: .notSent
        default: nil
        }
    }

    /// Unknown numbers (a newer plugin's statuses) are `.unknown`: never guess `paid`.
    static func status(_ v: Int32) -> GatewayStatus {
        switch v {
        case 1: .pending
        case 2: .paid
        case 3: .failed
        case 4: .expired
        case 5: .refunded
        case 6: .chargeback
        case 7: .notFound
        default: .unknown
        }
    }

    /// Strings longer than this in a plugin's result are cut: they only feed logs and columns.
    static let maxText = 4096

    static func text(_ s: String, limit: Int = maxText) -> String {
        s.utf8.count <= limit ? s : String(decoding: Array(s.utf8.prefix(limit)), as: UTF8.self)
    }

    /// Longest id a result may carry (`transaction_id`, `gateway_hash`, `reference`, `event_id`).
    static let maxID = 256

    /// Why a result's ids cannot be stored: one is longer than `maxID` bytes. A cut id would
    /// name another charge or none, so the whole result is refused instead (invalid_result).
    /// `ids` are (proto field name, value) pairs, checked in order.
    static func overlongID(_ ids: (field: String, value: String)...) -> String? {
        for (f, v) in ids where v.utf8.count > maxID {
            return "\(f) of \(v.utf8.count) bytes exceeds the \(maxID)-byte limit for ids"
        }
        return nil
    }
}
