/// How the Conversions API sender behaves. Every interval is configurable so tests run fast.
public struct MetaSenderConfiguration: Sendable {
    /// `https://graph.facebook.com`; tests point it at a fake on loopback.
    public var baseURL = "https://graph.facebook.com"
    public var apiVersion = "v21.0"
    /// How often to look for due events when nobody woke the sender.
    public var pollInterval: Duration = .seconds(1)
    /// Retry spacing (doubling, capped, jittered).
    public var backoff = MetaBackoff()
    /// Events per request (Meta allows up to 1,000); also the most rows claimed per pass.
    public var batchSize = 1000
    /// Per-request timeout: Meta suggests ~1.5 s; a large batch gets `perEventTimeout` more
    /// per event so 1,000 events are not cut off while uploading.
    public var requestTimeout: Duration = .milliseconds(1500)
    public var perEventTimeout: Duration = .milliseconds(2)
    /// Meta refuses events older than 7 days; a minute of margin keeps us clear of the edge.
    public var maxEventAgeSeconds: Int64 = 7 * 86_400 - 60
    /// Sent with events that have none of their own (empty: none).
    public var defaultTestEventCode = ""
    /// A row left `sending` this long after its POST started belongs to a sender that died (or
    /// stalled) mid-request: a Purchase is parked (Meta may count it), a PageView queued again.
    /// Never shorter than the longest request timeout plus 5 s.
    public var sendingLease: Duration = .seconds(60)
    /// How often the queue-depth gauges are refreshed from the table.
    public var depthRefresh: Duration = .seconds(5)

    public init() {}

    /// `{base}/{version}/{pixel}/events`, without the access token.
    public func endpoint(pixelID: String) -> String {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/\(apiVersion)/\(pixelID)/events"
    }

    var sendingLeaseMs: Int64 {
        max(MetaBackoff.ms(sendingLease), Int64(timeoutMs(events: batchSize)) + 5000)
    }

    func timeoutMs(events: Int) -> Int {
        Int(MetaBackoff.ms(requestTimeout) + MetaBackoff.ms(perEventTimeout) * Int64(events))
    }
}
