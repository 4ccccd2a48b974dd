import GatewayABI

/// The buyer, as the caller gave it. Documents (CPF/CNPJ) are passed through, never invented.
public struct GatewayCustomer: Sendable, Hashable {
    public var name: String
    public var email: String
    public var phone: String
    public var document: String

    public init(name: String = "", email: String = "", phone: String = "", document: String = "") {
        self.name = name
        self.email = email
        self.phone = phone
        self.document = document
    }
}

/// One charge to issue through a gateway.
public struct CreatePixRequest: Sendable, Hashable {
    /// `"PAY-{id}"`: the only handle on a charge whose answer was lost.
    public var reference: String
    public var amountCents: Int64
    public var description: String
    public var customer: GatewayCustomer
    /// Where the gateway should post its webhooks (`…/webhooks/{gateway}/{secret}`).
    public var postbackURL: String

    public init(reference: String, amountCents: Int64, description: String = "",
                customer: GatewayCustomer = GatewayCustomer(), postbackURL: String = "") {
        self.reference = reference
        self.amountCents = amountCents
        self.description = description
        self.customer = customer
        self.postbackURL = postbackURL
    }
}

/// What one create call decided (DESIGN §2). Maps to payment statuses as:
/// `created` → pending, `declined` / `notSent` → failed, `unknown` → stays pending_verification.
public enum CreateOutcome: String, Sendable, Hashable {
    /// The gateway issued the PIX; the result has a transaction id and a pix code with a valid CRC.
    case created
    /// The gateway answered and refused.
    case declined
    /// The request certainly never reached the gateway: safe to fail and retry.
    case notSent = "not_sent"
    /// Anything else: timeout after sending, 5xx, garbled answer, plugin misbehaviour.
    case unknown
}

/// The result of `GatewayInstance.createPix`.
public struct CreatePixOutcome: Sendable, Hashable {
    public var outcome: CreateOutcome
    public var transactionID: String = ""
    /// A second gateway identifier when there is one (ÁtomoPay's `hash`): store it and pass it
    /// back in `StatusQuery.gatewayHash`.
    public var gatewayHash: String = ""
    /// BR Code "copia e cola" (CRC checked by the host).
    public var pixCode: String = ""
    public var qrCodeBase64: String = ""
    /// 0 when the gateway gave no expiry.
    public var expiresAtUnixMs: Int64 = 0
    /// Detail for logs and operators (never shown to buyers); says why for `unknown`/`notSent`.
    public var message: String = ""
    /// Set when the host, not the plugin, decided the outcome (timeout, garbage, bad CRC, …).
    public var failure: GatewayCallFailure?
    public var elapsedMs: Int64 = 0

    public init(outcome: CreateOutcome, message: String = "", failure: GatewayCallFailure? = nil) {
        self.outcome = outcome
        self.message = message
        self.failure = failure
    }
}

/// A gateway's status, normalized by the plugin.
public enum GatewayStatus: String, Sendable, Hashable, CaseIterable {
    /// Unparsable, unrecognized, or the call failed: change nothing.
    case unknown
    case pending
    case paid
    case failed
    case expired
    case refunded
    case chargeback
    /// The gateway answered that it has no such charge.
    case notFound = "not_found"
}

/// Which charge `getStatus` asks about: by transaction id when known, else by reference (only
/// where `PluginInfo.supportsStatusByReference`).
public struct StatusQuery: Sendable, Hashable {
    public var transactionID: String
    public var reference: String
    public var gatewayHash: String

    public init(transactionID: String = "", reference: String = "", gatewayHash: String = "") {
        self.transactionID = transactionID
        self.reference = reference
        self.gatewayHash = gatewayHash
    }
}

/// The result of `GatewayInstance.getStatus`. On any failure `status` is `.unknown` and
/// `failure` says why.
public struct StatusOutcome: Sendable, Hashable {
    public var status: GatewayStatus
    public var amountCents: Int64 = 0
    public var paidAtUnixMs: Int64 = 0
    /// Filled when the charge was looked up by reference.
    public var transactionID: String = ""
    /// The gateway's own status word, for logs.
    public var rawStatus: String = ""
    /// The reference the gateway holds for the charge, when its answer carries one (checked
    /// against the payment before a webhook's transaction id is bound).
    public var reference: String = ""
    /// The second gateway id, when the answer carries one.
    public var gatewayHash: String = ""
    public var message: String = ""
    public var failure: GatewayCallFailure?
    public var elapsedMs: Int64 = 0

    public init(status: GatewayStatus, message: String = "", failure: GatewayCallFailure? = nil) {
        self.status = status
        self.message = message
        self.failure = failure
    }
}

/// A webhook as received on `POST /webhooks/{gateway}/{secret}`.
public struct WebhookRequest: Sendable, Hashable {
    public var headers: [GatewayHeader]
    public var body: [UInt8]

    public init(headers: [GatewayHeader] = [], body: [UInt8]) {
        self.headers = headers
        self.body = body
    }
}

public struct GatewayHeader: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// What a webhook claims. A hint only: confirm with `getStatus` before acting.
public struct WebhookOutcome: Sendable, Hashable {
    public var transactionID: String = ""
    public var reference: String = ""
    public var status: GatewayStatus = .unknown
    public var eventID: String = ""
    public var amountCents: Int64 = 0
    public var rawStatus: String = ""
    /// The second gateway id (`CreatePixOutcome.gatewayHash`), when the body carries it.
    public var gatewayHash: String = ""
    /// Set when the plugin could not parse the webhook (or misbehaved).
    public var failure: GatewayCallFailure?

    public init() {}
}

/// Why the host, not the gateway, decided a call's result.
public struct GatewayCallFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The plugin overran the host deadline (its late answer is discarded).
        case timeout
        /// The plugin returned a non-OK status (`code` holds it).
        case pluginError = "plugin_error"
        /// NULL, undecodable, oversized or inconsistent result (e.g. a bad BR Code CRC).
        case invalidResult = "invalid_result"
        /// Too many plugin calls already running: this one never started.
        case busy
        /// The plugin does not support the request (e.g. status by reference).
        case unsupported
        /// The plugin's runner process died during the call (crash, abort, out of memory, killed
        /// at a deadline), or the plugin is held back after repeated crashes.
        case crashed
    }

    public var kind: Kind
    /// The plugin's `PT_ERR_*` status for `.pluginError` / `.unsupported`, else 0.
    public var code: Int32
    public var message: String

    public init(_ kind: Kind, code: Int32 = 0, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var description: String { "\(kind.rawValue)\(code != 0 ? "(\(code))" : ""): \(message)" }

    /// The plugin refused its input (`PT_ERR_INVALID_ARGUMENT`): the same input will fail again.
    public var refusedInput: Bool { kind == .pluginError && code == PT_ERR_INVALID_ARGUMENT }
}

/// One gateway account's settings: which credentials and URL the plugin instance uses.
public struct GatewayConfig: Sendable, Hashable {
    /// Reach the plugin only through `create`; redacted from every host log line.
    public var credentials: [String: String]
    /// Empty means the plugin's built-in production URL.
    public var baseURL: String
    public var options: [String: String]

    public init(credentials: [String: String] = [:], baseURL: String = "", options: [String: String] = [:]) {
        self.credentials = credentials
        self.baseURL = baseURL
        self.options = options
    }

    /// Values the host hides from logs: every credential, and options whose name looks secret.
    var secretValues: [String] {
        let secretWords = ["token", "secret", "key", "password", "credential"]
        return Array(credentials.values) + options.filter { k, _ in
            let lower = k.lowercased()
            return secretWords.contains { lower.contains($0) }
        }.map(\.value)
    }
}
