import JSONKit

/// What came back from one POST to the Graph API, transport-independent.
public struct MetaHTTPResponse: Sendable, Equatable {
    public enum Failure: String, Sendable {
        /// Never left this machine (DNS, connect refused, TLS): safe to retry.
        case notSent = "not_sent"
        /// No complete answer in time (the request may have been processed).
        case timeout
        /// The connection broke mid-exchange, or any other transport failure.
        case transport
    }

    /// HTTP status; 0 when no complete answer arrived.
    public var status: Int
    public var body: [UInt8]
    public var failure: Failure?
    /// Seconds from a `Retry-After` header, when given.
    public var retryAfterSeconds: Int?

    public init(status: Int, body: [UInt8] = [], failure: Failure? = nil, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.body = body
        self.failure = failure
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// The decision for one batch, from DESIGN §3's rules.
public enum MetaDelivery: Sendable, Equatable {
    /// Meta accepted the batch.
    case delivered
    /// Keep the events and try again later (timeouts, 5xx, 429, transient Graph codes).
    case retry(reason: String, notBefore: Int?)
    /// Code 100 on a batch of several events: one bad event rejects them all, so the batch is
    /// split and the halves sent on their own; a single event with code 100 is parked.
    case invalidEvent(reason: String)
    /// Never retried (token, permission, unknown client errors): parked with the reason.
    case park(reason: String)

    /// Graph error codes worth retrying (plus anything flagged `is_transient`).
    public static let retryableCodes: Set<Int64> = [1, 2, 4, 17, 341, 368, 613]

    /// Classifies a response. Parking needs a recognised client error: anything unexplained
    /// (an HTML error page, a 404 from a misconfigured base URL) is retried, so events wait for
    /// the fix instead of being parked wholesale; they are dropped once 7 days old.
    public static func classify(_ r: MetaHTTPResponse) -> MetaDelivery {
        if let failure = r.failure {
            return .retry(reason: "transport: \(failure.rawValue)", notBefore: nil)
        }
        let error = (try? JSON.parse(r.body))?["error"]
        let code = error?["code"]?.int64
        let subcode = error?["error_subcode"]?.int64
        let transient = error?["is_transient"]?.bool ?? false
        let message = String((error?["message"]?.string ?? "").prefix(300))
        let described = code.map { "graph code \($0)" + (subcode.map { "/\($0)" } ?? "") + (message.isEmpty ? "" : ": \(message)") }
        if (200...299).contains(r.status) && error == nil { return .delivered }
        if transient { return .retry(reason: described ?? "transient error", notBefore: r.retryAfterSeconds) }
        if let code {
            if retryableCodes.contains(code) { return .retry(reason: described!, notBefore: r.retryAfterSeconds) }
            if code == 100 { return .invalidEvent(reason: described!) }
            if code == 190 || code == 102 || code == 10 || (200...299).contains(code) {
                return .park(reason: described!)
            }
        }
        if r.status == 429 || r.status >= 500 || r.status == 0 {
            return .retry(reason: "http \(r.status)" + (described.map { " (\($0))" } ?? ""), notBefore: r.retryAfterSeconds)
        }
        if let described, (400...499).contains(r.status) { return .park(reason: "http \(r.status): \(described)") }
        return .retry(reason: "unexpected answer: http \(r.status)", notBefore: r.retryAfterSeconds)
    }
}

/// Exponential backoff with "equal jitter": attempt n waits between half and all of
/// `min(max, base * 2^(n-1))`, so retries from many events spread out but never come back at once.
public struct MetaBackoff: Sendable, Equatable {
    public var base: Duration
    public var maximum: Duration

    public init(base: Duration = .seconds(2), maximum: Duration = .seconds(600)) {
        self.base = base
        self.maximum = maximum
    }

    /// The delay before retry number `attempt` (1 = the first retry), in milliseconds.
    public func delayMs(attempt: Int, random: Double = Double.random(in: 0...1)) -> Int64 {
        let baseMs = Self.ms(base), maxMs = Self.ms(maximum)
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(Double(maxMs), Double(baseMs) * Double(1 << exponent))
        return Int64(ceiling / 2 + ceiling / 2 * min(max(random, 0), 1))
    }

    static func ms(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }
}
