import HTTPClient

/// Posts one request body to the Graph API. Blocking: the sender calls it from the database
/// connection's thread (never Swift's cooperative pool), inside the transaction that holds the
/// events' row locks.
public protocol MetaTransport: Sendable {
    func post(url: String, body: [UInt8], timeoutMs: Int) -> MetaHTTPResponse
}

/// The production transport: libcurl through `HTTPClient` (no redirects, bounded answer size).
public struct CurlMetaTransport: MetaTransport {
    private let client: HTTPClient

    public init(connectTimeoutMs: Int = 1_000) {
        var configuration = HTTPClient.Configuration()
        configuration.connectTimeoutMs = connectTimeoutMs
        configuration.maxResponseBytes = 256 << 10
        configuration.userAgent = "PixTrack/1 (conversions-api)"
        client = HTTPClient(configuration: configuration)
    }

    public func post(url: String, body: [UInt8], timeoutMs: Int) -> MetaHTTPResponse {
        let result = client.execute(HTTPClientRequest(
            method: "POST", url: url, headers: [HTTPClientHeader("Content-Type", "application/json")],
            body: body, timeoutMs: timeoutMs))
        let retryAfter = result.header("retry-after").flatMap { Int($0.trimmingCharacters()) }
        guard let error = result.error else {
            return MetaHTTPResponse(status: result.status, body: result.body, retryAfterSeconds: retryAfter)
        }
        let failure: MetaHTTPResponse.Failure = !result.sent ? .notSent : error == .timeout ? .timeout : .transport
        return MetaHTTPResponse(status: 0, failure: failure)
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
