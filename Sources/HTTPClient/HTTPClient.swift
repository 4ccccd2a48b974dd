internal import CCurl
import Glibc

/// A blocking HTTP/1.1 client over libcurl, with the policy PixTrack wants for calls to payment
/// gateways and Meta: per-call connect and total timeouts, a response size limit, no redirects,
/// http/https only, and a result that says whether the request was **sent**.
///
/// `execute` blocks its thread for up to the request's timeout: call it from a thread reserved
/// for blocking work, never from the Swift cooperative pool or an event loop. A client is
/// stateless apart from its configuration, so one instance may serve any number of threads.
public final class HTTPClient: Sendable {
    public struct Configuration: Sendable {
        public var connectTimeoutMs = 2_000
        public var timeoutMs = 5_000
        public var maxResponseBytes = 1 << 20
        public var userAgent = "PixTrack/1"

        public init() {}
    }

    public let configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Performs `request` and waits for the answer, an error or the timeout.
    public func execute(_ request: HTTPClientRequest) -> HTTPClientResult {
        let start = Self.monotonicMs()
        var result = perform(request)
        result.elapsedMs = Self.monotonicMs() - start
        return result
    }

    private func perform(_ request: HTTPClientRequest) -> HTTPClientResult {
        let method = request.method.uppercased()
        guard ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(method) else {
            return .notSent(.invalidRequest, "unsupported method '\(request.method)'")
        }
        let lowerURL = request.url.lowercased()
        guard lowerURL.hasPrefix("http://") || lowerURL.hasPrefix("https://") else {
            return .notSent(.invalidRequest, "only http and https URLs are allowed")
        }
        guard !request.url.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F }) else {
            return .notSent(.invalidRequest, "URL contains spaces or control characters")
        }
        for h in request.headers {
            let bad = { (s: String) in s.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 } }
            guard !h.name.isEmpty, !bad(h.name), !bad(h.value), !h.name.contains(":") else {
                return .notSent(.invalidRequest, "invalid header '\(Redactor.redactQueryValues(in: h.name))'")
            }
        }
        guard let easy = CurlEasy() else { return .notSent(.other, "curl_easy_init failed") }

        let connectMs = max(1, request.connectTimeoutMs ?? configuration.connectTimeoutMs)
        let totalMs = max(1, request.timeoutMs ?? configuration.timeoutMs)
        let limit = max(0, min(request.maxResponseBytes ?? configuration.maxResponseBytes, Int(Int32.max)))
        let state = TransferState(limit: limit)
        let headerList = CurlHeaderList()

        easy.set(CURLOPT_URL, request.url)
        easy.set(CURLOPT_NOSIGNAL, 1)
        easy.set(CURLOPT_PROTOCOLS_STR, "http,https")
        easy.set(CURLOPT_FOLLOWLOCATION, 0)
        easy.set(CURLOPT_CONNECTTIMEOUT_MS, min(connectMs, totalMs))
        easy.set(CURLOPT_TIMEOUT_MS, totalMs)
        easy.set(CURLOPT_MAXFILESIZE_LARGE, offset: Int64(limit))
        easy.set(CURLOPT_USERAGENT, configuration.userAgent)
        // One connection per request: a fresh handle never silently retries on a reused socket.
        easy.set(CURLOPT_FORBID_REUSE, 1)

        switch method {
        case "GET": easy.set(CURLOPT_HTTPGET, 1)
        case "HEAD": easy.set(CURLOPT_NOBODY, 1)
        case "POST": easy.set(CURLOPT_POST, 1)
        default: easy.set(CURLOPT_CUSTOMREQUEST, method)
        }
        if method != "GET" && method != "HEAD" {
            easy.set(CURLOPT_POSTFIELDSIZE_LARGE, offset: Int64(request.body.count))
            // COPYPOSTFIELDS copies the bytes, so nothing of ours has to outlive perform().
            request.body.withUnsafeBytes { raw in
                var byte: UInt8 = 0
                let base = raw.baseAddress ?? withUnsafePointer(to: &byte) { UnsafeRawPointer($0) }
                easy.set(CURLOPT_COPYPOSTFIELDS, pointer: base)
            }
        }
        for h in request.headers { headerList.append("\(h.name): \(h.value)") }
        // curl adds `Expect: 100-continue` to larger bodies and then waits ~1 s for servers that
        // never answer it; an empty value disables that.
        headerList.append("Expect:")
        easy.set(CURLOPT_HTTPHEADER, pointer: UnsafeRawPointer(headerList.list))

        let code: CURLcode = withExtendedLifetime((state, headerList)) {
            let context = Unmanaged.passUnretained(state).toOpaque()
            easy.set(CURLOPT_WRITEFUNCTION, writer: TransferState.onBody)
            easy.set(CURLOPT_WRITEDATA, pointer: context)
            easy.set(CURLOPT_HEADERFUNCTION, writer: TransferState.onHeader)
            easy.set(CURLOPT_HEADERDATA, pointer: context)
            easy.setPrereq(TransferState.onPrereq)
            easy.set(CURLOPT_PREREQDATA, pointer: context)
            return easy.perform()
        }
        return Self.result(code, easy: easy, state: state, limit: limit)
    }

    private static func result(_ code: CURLcode, easy: CurlEasy, state: TransferState, limit: Int) -> HTTPClientResult {
        let sent = state.requestStarted
        if code == CURLE_OK {
            return HTTPClientResult(sent: true, status: easy.infoLong(CURLINFO_RESPONSE_CODE), headers: state.headers, body: state.body)
        }
        let detail = Redactor.redactQueryValues(in: CurlEasy.describe(code))
        let kind: HTTPClientErrorKind
        var wasSent = sent
        switch code {
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            kind = .invalidRequest; wasSent = false
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            kind = .dns; wasSent = false
        case CURLE_COULDNT_CONNECT:
            kind = .connect; wasSent = false
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
             CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED:
            kind = .tls; wasSent = false
        case CURLE_OPERATION_TIMEDOUT:
            kind = .timeout
        case CURLE_SEND_ERROR:
            kind = .send
        case CURLE_WRITE_ERROR, CURLE_FILESIZE_EXCEEDED:
            kind = state.overLimit || code == CURLE_FILESIZE_EXCEEDED ? .tooLarge : .other
        case CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM,
             CURLE_WEIRD_SERVER_REPLY:
            kind = .receive
        default:
            kind = .other
        }
        let message = kind == .tooLarge ? "response larger than \(limit) bytes" : detail
        // A status that arrived before the failure (e.g. a truncated body) is kept for logs.
        return HTTPClientResult(sent: wasSent, status: 0, headers: state.headers, body: [], error: kind,
                          errorMessage: message)
    }

    static func monotonicMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// What curl's callbacks collect during one `perform()`.
///
/// Invariant: curl calls these callbacks only from inside `perform()`, on the calling thread, so
/// the state is never touched concurrently; the `Unmanaged` pointer is unretained and the state
/// is kept alive by `withExtendedLifetime` around `perform()`.
final class TransferState {
    let limit: Int
    var body: [UInt8] = []
    var headers: [HTTPClientHeader] = []
    var overLimit = false
    /// Set when the connection was up and curl was about to write the request.
    var requestStarted = false

    init(limit: Int) { self.limit = limit }

    static let onBody: curl_write_callback = { data, size, count, context in
        guard let context else { return 0 }
        let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
        let n = size * count
        guard state.body.count + n <= state.limit else {
            state.overLimit = true
            return 0  // makes curl fail with CURLE_WRITE_ERROR
        }
        if n > 0, let data {
            data.withMemoryRebound(to: UInt8.self, capacity: n) { state.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) }
        }
        return n
    }

    static let onHeader: curl_write_callback = { data, size, count, context in
        let n = size * count
        guard let context, let data else { return n }
        let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
        let line = data.withMemoryRebound(to: UInt8.self, capacity: n) {
            String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
        }
        if line.hasPrefix("HTTP/") {
            state.headers.removeAll()  // a new response (after 100 Continue, say) starts over
        } else if let colon = line.firstIndex(of: ":") {
            let name = String(line[..<colon]).trimmingSpaces()
            let value = String(line[line.index(after: colon)...]).trimmingSpaces()
            if !name.isEmpty && state.headers.count < 200 { state.headers.append(HTTPClientHeader(name, value)) }
        }
        return n
    }

    static let onPrereq: pt_curl_prereq_callback = { context, _, _, _, _ in
        if let context {
            Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue().requestStarted = true
        }
        return Int32(CURL_PREREQFUNC_OK)
    }
}

extension String {
    /// Without leading and trailing whitespace (Foundation-free).
    func trimmingSpaces() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
