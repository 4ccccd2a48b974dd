/// Why an exchange failed. Whether the server may have seen the request is `HTTPClientResult.sent`.
public enum HTTPClientErrorKind: String, Sendable, Hashable {
    /// Malformed URL, unsupported scheme or method: never sent.
    case invalidRequest = "invalid_request"
    /// Name resolution failed: never sent.
    case dns
    /// TCP connect refused or timed out: never sent.
    case connect
    /// TLS handshake or certificate failure: never sent.
    case tls
    /// Time ran out, before or after sending (see `sent`).
    case timeout
    /// Writing the request failed part-way.
    case send
    /// The connection broke before a complete answer (reset, closed, truncated).
    case receive
    /// The answer exceeded the size limit.
    case tooLarge = "too_large"
    /// The caller's deadline had passed before the request could start: never sent.
    case deadline
    case other
}

/// The result of one exchange: an answer (any status) or an error, plus whether the request left.
public struct HTTPClientResult: Sendable, Hashable {
    /// False only when the request certainly never reached the server (DNS, connect, TLS, invalid
    /// request, deadline). True means the server may have acted on it, answer or not.
    public var sent: Bool
    /// The HTTP status; 0 when no complete answer arrived.
    public var status: Int
    public var headers: [HTTPClientHeader]
    public var body: [UInt8]
    /// `nil` when a complete answer arrived (whatever its status).
    public var error: HTTPClientErrorKind?
    /// Detail for logs (query secrets redacted); empty on success.
    public var errorMessage: String
    public var elapsedMs: Int64

    public init(sent: Bool, status: Int = 0, headers: [HTTPClientHeader] = [], body: [UInt8] = [],
                error: HTTPClientErrorKind? = nil, errorMessage: String = "", elapsedMs: Int64 = 0) {
        self.sent = sent
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error
        self.errorMessage = errorMessage
        self.elapsedMs = elapsedMs
    }

    /// A failure that happened before anything was sent.
    public static func notSent(_ kind: HTTPClientErrorKind, _ message: String) -> HTTPClientResult {
        HTTPClientResult(sent: false, error: kind, errorMessage: message)
    }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }

    /// The body as UTF-8 text (invalid sequences repaired), for logs and plain-text answers.
    public var text: String { String(decoding: body, as: UTF8.self) }
}
