import PixTrackMessages

/// The configuration `create` receives (`pixtrack.v1.PluginConfig`).
public struct PluginConfiguration: Sendable, Hashable {
    public var credentials: [String: String]
    /// Empty means the plugin's built-in production URL.
    public var baseURL: String
    public var options: [String: String]

    public init(credentials: [String: String] = [:], baseURL: String = "", options: [String: String] = [:]) {
        self.credentials = credentials
        self.baseURL = baseURL
        self.options = options
    }

    /// A credential that must be present and non-empty.
    public func credential(_ name: String) throws(PluginError) -> String {
        guard let v = credentials[name], !v.isEmpty else { throw .config("missing credential '\(name)'") }
        return v
    }

    /// `baseURL` if set (without a trailing slash), else `fallback`; must be http(s).
    public func baseURL(default fallback: String) throws(PluginError) -> String {
        var url = baseURL.isEmpty ? fallback : baseURL
        while url.hasSuffix("/") { url.removeLast() }
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else {
            throw .config("base URL must start with https:// or http://")
        }
        return url
    }

    /// An integer option, or `fallback` when absent; throws when present but not an integer.
    public func intOption(_ name: String, default fallback: Int64) throws(PluginError) -> Int64 {
        guard let v = options[name], !v.isEmpty else { return fallback }
        guard let n = Int64(v) else { throw .config("option '\(name)' must be an integer") }
        return n
    }

    init(_ m: Pixtrack_V1_PluginConfig) {
        credentials = m.credentials
        baseURL = m.baseUrl
        options = m.options
    }
}

public struct PixCustomer: Sendable, Hashable {
    public var name = "", email = "", phone = "", document = ""
    public init() {}
}

/// `pixtrack.v1.CreatePixRequest`.
public struct PixRequest: Sendable, Hashable {
    public var reference: String
    public var amountCents: Int64
    public var description: String
    public var customer: PixCustomer
    public var postbackURL: String

    init(_ m: Pixtrack_V1_CreatePixRequest) {
        reference = m.reference
        amountCents = m.amountCents
        description = m.description
        var c = PixCustomer()
        if let cm = m.customer {
            c.name = cm.name
            c.email = cm.email
            c.phone = cm.phone
            c.document = cm.document
        }
        customer = c
        postbackURL = m.postbackUrl
    }
}

/// `pixtrack.v1.CreateOutcome`.
public enum PixOutcome: Int32, Sendable {
    case unknown = 0, created = 1, declined = 2, notSent = 3
}

/// `pixtrack.v1.CreatePixResult`.
public struct PixResult: Sendable, Hashable {
    public var outcome: PixOutcome
    public var transactionID = ""
    public var gatewayHash = ""
    public var pixCode = ""
    public var qrCodeBase64 = ""
    public var expiresAtUnixMs: Int64 = 0
    public var message = ""
    /// Set only by the misbehaviour constructors below.
    var rawOverride: RawOverride?

    public init(_ outcome: PixOutcome, message: String = "") {
        self.outcome = outcome
        self.message = message
    }

    /// What a deliberately misbehaving plugin (the sandbox, test fixtures) returns instead of an
    /// encoded result.
    enum RawOverride: Sendable, Hashable {
        case bytes([UInt8])
        case null
        case huge(Int)
    }

    /// Test-only misbehaviour: these bytes are returned as the "result" (garbage).
    public static func garbage(_ bytes: [UInt8]) -> PixResult {
        var r = PixResult(.unknown)
        r.rawOverride = .bytes(bytes)
        return r
    }

    /// Test-only misbehaviour: PT_OK with a NULL result.
    public static var nullResult: PixResult {
        var r = PixResult(.unknown)
        r.rawOverride = .null
        return r
    }

    /// Test-only misbehaviour: a result buffer of `byteCount` bytes (beyond the host's limit).
    public static func huge(_ byteCount: Int) -> PixResult {
        var r = PixResult(.unknown)
        r.rawOverride = .huge(byteCount)
        return r
    }

    var wire: Pixtrack_V1_CreatePixResult {
        var m = Pixtrack_V1_CreatePixResult()
        m.outcome = Pixtrack_V1_CreateOutcome(rawValue: outcome.rawValue)
        m.transactionId = transactionID.withoutNUL
        m.gatewayHash = gatewayHash.withoutNUL
        m.pixCode = pixCode.withoutNUL
        m.qrCodeBase64 = qrCodeBase64.withoutNUL
        m.expiresAtUnixMs = expiresAtUnixMs
        m.message = message.withoutNUL
        return m
    }
}

/// `pixtrack.v1.GatewayStatus`.
public enum PixStatus: Int32, Sendable, CaseIterable {
    case unknown = 0, pending, paid, failed, expired, refunded, chargeback, notFound
}

/// `pixtrack.v1.GetStatusRequest`.
public struct StatusRequest: Sendable, Hashable {
    public var transactionID: String
    public var reference: String
    public var gatewayHash: String

    init(_ m: Pixtrack_V1_GetStatusRequest) {
        transactionID = m.transactionId
        reference = m.reference
        gatewayHash = m.gatewayHash
    }
}

/// `pixtrack.v1.StatusResult`.
public struct StatusResult: Sendable, Hashable {
    public var status: PixStatus
    public var amountCents: Int64 = 0
    public var paidAtUnixMs: Int64 = 0
    public var message = ""
    public var transactionID = ""
    public var rawStatus = ""
    /// The reference (`PAY-{id}`) the gateway holds for the charge, when the answer carries one:
    /// the host checks it against the payment before binding a webhook's transaction id.
    public var reference = ""
    /// The second gateway id, when the answer carries one.
    public var gatewayHash = ""

    public init(_ status: PixStatus, rawStatus: String = "") {
        self.status = status
        self.rawStatus = rawStatus
    }

    var wire: Pixtrack_V1_StatusResult {
        var m = Pixtrack_V1_StatusResult()
        m.status = Pixtrack_V1_GatewayStatus(rawValue: status.rawValue)
        m.amountCents = amountCents
        m.paidAtUnixMs = paidAtUnixMs
        m.message = message.withoutNUL
        m.transactionId = transactionID.withoutNUL
        m.rawStatus = rawStatus.withoutNUL
        m.reference = reference.withoutNUL
        m.gatewayHash = gatewayHash.withoutNUL
        return m
    }
}

/// One HTTP header (webhooks, HTTP answers).
public struct HeaderField: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

extension Array where Element == HeaderField {
    /// The first header with this name (case-insensitive).
    public func value(_ name: String) -> String? {
        let lower = name.lowercased()
        return first { $0.name.lowercased() == lower }?.value
    }
}

/// `pixtrack.v1.ParseWebhookRequest`.
public struct WebhookPayload: Sendable, Hashable {
    public var headers: [HeaderField]
    public var body: [UInt8]

    public init(headers: [HeaderField] = [], body: [UInt8]) {
        self.headers = headers
        self.body = body
    }

    init(_ m: Pixtrack_V1_ParseWebhookRequest) {
        headers = m.headers.map { HeaderField($0.name, $0.value) }
        body = m.body
    }
}

/// `pixtrack.v1.WebhookResult`.
public struct WebhookResult: Sendable, Hashable {
    public var transactionID = ""
    public var reference = ""
    public var status: PixStatus = .unknown
    public var eventID = ""
    public var amountCents: Int64 = 0
    public var rawStatus = ""
    /// The second gateway id (what `PixResult.gatewayHash` returned), when the body carries it.
    public var gatewayHash = ""

    public init() {}

    /// Why the ids cannot cross the ABI whole: one is longer than the 256 bytes the host takes.
    var overlongID: String? {
        for (name, id) in [("transaction id", transactionID), ("reference", reference), ("event id", eventID), ("gateway hash", gatewayHash)]
        where id.utf8.count > 256 {
            return "webhook \(name) of \(id.utf8.count) bytes is longer than 256"
        }
        return nil
    }

    var wire: Pixtrack_V1_WebhookResult {
        var m = Pixtrack_V1_WebhookResult()
        m.transactionId = transactionID.withoutNUL
        m.reference = reference.withoutNUL
        m.status = Pixtrack_V1_GatewayStatus(rawValue: status.rawValue)
        m.eventId = eventID.withoutNUL
        m.amountCents = amountCents
        m.rawStatus = rawStatus.withoutNUL
        m.gatewayHash = gatewayHash.withoutNUL
        return m
    }
}

extension String {
    /// The string without NULs (which protobuf-c strings cannot hold): what a result field carries.
    var withoutNUL: String { contains("\0") ? String(filter { $0 != "\0" }) : self }
}

/// A failure a plugin function reports instead of a result: an ABI status code and a message
/// (no secrets in it).
public struct PluginError: Error, Sendable, Hashable, CustomStringConvertible {
    public let code: Int32
    public let message: String

    public init(code: Int32, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func invalidArgument(_ m: String) -> PluginError { PluginError(code: 1, m) }
    public static func config(_ m: String) -> PluginError { PluginError(code: 2, m) }
    public static func unsupported(_ m: String) -> PluginError { PluginError(code: 3, m) }
    public static func gateway(_ m: String) -> PluginError { PluginError(code: 4, m) }
    public static func unavailable(_ m: String) -> PluginError { PluginError(code: 5, m) }
    public static func deadline(_ m: String) -> PluginError { PluginError(code: 6, m) }
    public static func `internal`(_ m: String) -> PluginError { PluginError(code: 7, m) }

    public var description: String { "PluginError(\(code)): \(message)" }
}
