import GatewayABI
import PixTrackMessages

/// The host's services for the duration of one plugin call: HTTP through the host, logging,
/// clocks. Valid only inside the plugin function it was passed to.
///
/// `@unchecked Sendable`: it holds the host's process-lifetime table and the opaque call handle;
/// the host functions are thread-safe (ABI rule).
public struct HostCall: @unchecked Sendable {
    let host: UnsafePointer<pt_host_api>
    let call: OpaquePointer?

    init(host: UnsafePointer<pt_host_api>, call: OpaquePointer?) {
        self.host = host
        self.call = call
    }

    public enum LogLevel: Int32, Sendable { case debug = 0, info, warning, error }

    /// One log line, attributed to this plugin and instance (the host redacts known secrets).
    public func log(_ level: LogLevel, _ message: String) {
        let clean = message.contains("\0") ? String(message.filter { $0 != "\0" }) : message
        clean.withCString { host.pointee.log(call, level.rawValue, $0) }
    }

    /// Unix epoch milliseconds.
    public var nowUnixMs: Int64 { host.pointee.now_unix_ms() }

    /// A monotonic clock in milliseconds (for expiry and durations).
    public var monotonicMs: Int64 { host.pointee.monotonic_ms() }

    /// Milliseconds left before the host abandons this call.
    public var remainingMs: Int64 { host.pointee.remaining_ms(call) }

    /// Performs one request through the host (which applies timeouts capped by the call's
    /// deadline, a size limit, no redirects) and says whether it was sent.
    public func http(_ request: PluginHTTPRequest) -> PluginHTTPResponse {
        var m = Pixtrack_V1_HttpRequest()
        m.method = request.method.withoutNUL
        m.url = request.url.withoutNUL
        // Header NULs are not dropped: such a request is refused below (not encodable).
        m.headers = request.headers.map {
            var h = Pixtrack_V1_Header()
            h.name = $0.name
            h.value = $0.value
            return h
        }
        m.body = request.body
        if let t = request.timeoutMs { m.timeoutMs = Int32(clamping: t) }
        if let t = request.connectTimeoutMs { m.connectTimeoutMs = Int32(clamping: t) }
        m.noSideEffects = request.noSideEffects
        guard let bytes = try? m.serializedBytes() else {
            return PluginHTTPResponse(sent: false, error: .invalidRequest, errorMessage: "request could not be encoded")
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var outLength = 0
        let input = bytes.isEmpty ? [UInt8(0)] : bytes
        let status = input.withUnsafeBufferPointer {
            host.pointee.http_request(call, $0.baseAddress, bytes.count, &out, &outLength)
        }
        guard status == PT_OK, let out else {
            return PluginHTTPResponse(sent: false, error: .invalidRequest, errorMessage: "host refused the request (status \(status))")
        }
        let answer = Array(UnsafeBufferPointer(start: out, count: outLength))
        host.pointee.free_buffer(out, outLength)
        guard let r = try? Pixtrack_V1_HttpResponse(serializedBytes: answer) else {
            // Cannot tell what happened: assume the worst (sent).
            return PluginHTTPResponse(sent: true, error: .other, errorMessage: "host answer does not decode")
        }
        return PluginHTTPResponse(
            sent: r.sent, status: Int(r.status), headers: r.headers.map { HeaderField($0.name, $0.value) },
            body: r.body, error: PluginHTTPResponse.ErrorKind(rawValue: r.error.rawValue) ?? .other,
            errorMessage: r.errorMessage, elapsedMs: r.elapsedMs)
    }
}

/// A request for `HostCall.http`.
public struct PluginHTTPRequest: Sendable, Hashable {
    public var method: String
    public var url: String
    public var headers: [HeaderField]
    public var body: [UInt8]
    public var timeoutMs: Int?
    public var connectTimeoutMs: Int?
    /// Declares that this request cannot create or change a charge (token fetch, status lookup),
    /// so its being sent does not make a NOT_SENT outcome unbelievable to the host.
    public var noSideEffects: Bool

    public init(method: String = "GET", url: String, headers: [HeaderField] = [], body: [UInt8] = [],
                timeoutMs: Int? = nil, connectTimeoutMs: Int? = nil, noSideEffects: Bool = false) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeoutMs = timeoutMs
        self.connectTimeoutMs = connectTimeoutMs
        self.noSideEffects = noSideEffects
    }

    /// A JSON request: body serialized, `Content-Type` and `Accept` set.
    public static func json(_ method: String, _ url: String, _ body: JSON?, headers: [HeaderField] = [],
                            noSideEffects: Bool = false) -> PluginHTTPRequest {
        PluginHTTPRequest(method: method, url: url,
                          headers: headers + [HeaderField("Accept", "application/json")] +
                              (body == nil ? [] : [HeaderField("Content-Type", "application/json")]),
                          body: body?.bytes ?? [], noSideEffects: noSideEffects)
    }
}

/// The host's answer to `HostCall.http` (`pixtrack.v1.HttpResponse`).
public struct PluginHTTPResponse: Sendable, Hashable {
    /// `pixtrack.v1.HttpErrorKind`.
    public enum ErrorKind: Int32, Sendable {
        case none = 0, invalidRequest, dns, connect, tls, timeout, send, receive, tooLarge, deadline, other
    }

    /// False only when the gateway certainly never saw the request.
    public var sent: Bool
    /// 0 when no complete answer arrived.
    public var status: Int
    public var headers: [HeaderField]
    public var body: [UInt8]
    public var error: ErrorKind
    public var errorMessage: String
    public var elapsedMs: Int64

    public init(sent: Bool, status: Int = 0, headers: [HeaderField] = [], body: [UInt8] = [],
                error: ErrorKind = .none, errorMessage: String = "", elapsedMs: Int64 = 0) {
        self.sent = sent
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error
        self.errorMessage = errorMessage
        self.elapsedMs = elapsedMs
    }

    /// A complete answer arrived (any status).
    public var answered: Bool { error == .none && status != 0 }

    /// The body as JSON, `nil` when it is not valid JSON (an HTML error page, say).
    public var json: JSON? { try? JSON.parse(body) }

    /// The body as text, for messages (cut to 200 characters).
    public var snippet: String { String(String(decoding: body.prefix(200), as: UTF8.self).filter { $0 != "\0" }) }
}
