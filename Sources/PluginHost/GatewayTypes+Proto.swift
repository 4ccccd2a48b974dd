import ProtoCodec

/// Conversions between the public value types and the `pixtrack.v1` messages that cross the ABI.
enum GatewayProto {
    static let package = "pixtrack.v1."

    static func config(_ c: GatewayConfig) -> ProtoMessage {
        var m = ProtoMessage(package + "PluginConfig")
        if !c.credentials.isEmpty {
            m["credentials"] = .stringMap(c.credentials, entryType: package + "PluginConfig.CredentialsEntry")
        }
        if !c.baseURL.isEmpty { m["base_url"] = .string(c.baseURL) }
        if !c.options.isEmpty {
            m["options"] = .stringMap(c.options, entryType: package + "PluginConfig.OptionsEntry")
        }
        return m
    }

    static func createRequest(_ r: CreatePixRequest) -> ProtoMessage {
        var customer = ProtoMessage(package + "Customer")
        setString(&customer, "name", r.customer.name)
        setString(&customer, "email", r.customer.email)
        setString(&customer, "phone", r.customer.phone)
        setString(&customer, "document", r.customer.document)
        var m = ProtoMessage(package + "CreatePixRequest")
        setString(&m, "reference", r.reference)
        if r.amountCents != 0 { m["amount_cents"] = .int64(r.amountCents) }
        setString(&m, "description", r.description)
        m["customer"] = .message(customer)
        setString(&m, "postback_url", r.postbackURL)
        return m
    }

    static func statusRequest(_ q: StatusQuery) -> ProtoMessage {
        var m = ProtoMessage(package + "GetStatusRequest")
        setString(&m, "transaction_id", q.transactionID)
        setString(&m, "reference", q.reference)
        setString(&m, "gateway_hash", q.gatewayHash)
        return m
    }

    static func webhookRequest(_ w: WebhookRequest) -> ProtoMessage {
        var m = ProtoMessage(package + "ParseWebhookRequest")
        if !w.headers.isEmpty {
            m["headers"] = .list(w.headers.map {
                // Names lower-case whatever the client sent (HTTP/2 already is; the HandleWebhook
                // RPC may not be): a plugin compares them with strcmp.
                .message(ProtoMessage(package + "Header", ["name": .string($0.name.lowercased()), "value": .string($0.value)]))
            })
        }
        if !w.body.isEmpty { m["body"] = .bytes(w.body) }
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

    static func text(_ m: ProtoMessage, _ field: String, limit: Int = maxText) -> String {
        let s = m.string(field)
        return s.utf8.count <= limit ? s : String(decoding: Array(s.utf8.prefix(limit)), as: UTF8.self)
    }

    /// Longest id a result may carry (`transaction_id`, `gateway_hash`, `reference`, `event_id`).
    static let maxID = 256

    /// Why a result's ids cannot be stored: one is longer than `maxID` bytes. A cut id would
    /// name another charge or none, so the whole result is refused instead (invalid_result).
    static func overlongID(_ m: ProtoMessage, _ fields: String...) -> String? {
        for f in fields where m.string(f).utf8.count > maxID {
            return "\(f) of \(m.string(f).utf8.count) bytes exceeds the \(maxID)-byte limit for ids"
        }
        return nil
    }

    private static func setString(_ m: inout ProtoMessage, _ field: String, _ value: String) {
        if !value.isEmpty { m[field] = .string(value) }
    }
}
