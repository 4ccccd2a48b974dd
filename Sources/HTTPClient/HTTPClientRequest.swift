/// One HTTP header. A list of them keeps order and repeated names.
public struct HTTPClientHeader: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// What `HTTPClient.execute` sends.
public struct HTTPClientRequest: Sendable, Hashable {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`.
    public var method: String
    /// An absolute `http://` or `https://` URL.
    public var url: String
    public var headers: [HTTPClientHeader]
    public var body: [UInt8]
    /// Milliseconds to establish the connection (TCP and TLS); `nil` uses the client's default.
    public var connectTimeoutMs: Int?
    /// Milliseconds for the whole exchange, connect included; `nil` uses the client's default.
    public var timeoutMs: Int?
    /// Largest body accepted; `nil` uses the client's default. A larger one fails as `.tooLarge`.
    public var maxResponseBytes: Int?

    public init(method: String = "GET", url: String, headers: [HTTPClientHeader] = [], body: [UInt8] = [],
                connectTimeoutMs: Int? = nil, timeoutMs: Int? = nil, maxResponseBytes: Int? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
        self.maxResponseBytes = maxResponseBytes
    }
}
