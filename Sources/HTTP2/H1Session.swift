import CHTTPParser
import RPC

/// Incremental HTTP/1.1 request parsing with http_parser, under size limits. Loop thread only.
/// Completed requests queue up (pipelining); the connection answers them in order.
final class H1Session {
    typealias Limits = HTTP2Server.HTTP1Limits

    /// A request the parser finished, with whether the connection may stay open after it.
    struct Completed {
        var request: HTTPRequest
        var keepAlive: Bool
    }

    enum Failure: Equatable {
        case badRequest(String)
        case headersTooLarge
        case bodyTooLarge
        case versionNotSupported
    }

    let limits: Limits
    let peer: String
    private let parser: UnsafeMutablePointer<http_parser>

    // The message being parsed.
    private var url: [UInt8] = []
    private var field: [UInt8] = []
    private var value: [UInt8] = []
    private var inValue = false
    private var headers: [(name: String, value: String)] = []
    private var body: [UInt8] = []
    private var headerBytes = 0
    private(set) var messageStarted: ContinuousClock.Instant?
    private(set) var headersDone = false

    private(set) var completed: [Completed] = []
    private(set) var failure: Failure?
    /// Bytes to send before any response (`100 Continue`).
    var interim: [UInt8] = []

    init(limits: Limits, peer: String) {
        self.limits = limits
        self.peer = peer
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit { parser.deallocate() }

    /// A message is partly received (its first byte arrived, its last has not).
    var inMessage: Bool { messageStarted != nil }

    func takeCompleted() -> [Completed] {
        defer { completed.removeAll() }
        return completed
    }

    /// Parses `bytes`. After a failure the session accepts nothing more.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil, bytes.count > 0 else { return }
        let n = http_parser_execute(parser, &h1Settings, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        let err = pt_http_errno(parser)
        if failure == nil && (err != HPE_OK.rawValue || n != bytes.count) {
            let name = String(cString: http_errno_description(http_errno(rawValue: err)))
            failure = .badRequest("malformed HTTP/1.1 request: \(name)")
        }
        if failure == nil, pt_http_upgrade(parser) != 0 {
            failure = .badRequest("protocol upgrade is not supported on this port")
        }
    }

    // MARK: parser callbacks

    fileprivate func messageBegin() -> Int32 {
        messageStarted = .now
        headersDone = false
        // The scratch buffers keep their storage from one request to the next (each request's
        // strings are copies); headers and body were handed over with the last request.
        url.removeAll(keepingCapacity: true); field.removeAll(keepingCapacity: true); value.removeAll(keepingCapacity: true)
        headers.removeAll(); body.removeAll()
        inValue = false
        headerBytes = 0
        return 0
    }

    fileprivate func countHeaderBytes(_ n: Int) -> Int32 {
        headerBytes += n
        if headerBytes > limits.maxHeaderBytes { failure = .headersTooLarge; return 1 }
        return 0
    }

    fileprivate func appendURL(_ b: UnsafeRawBufferPointer) -> Int32 {
        url.append(contentsOf: b)
        return countHeaderBytes(b.count)
    }

    fileprivate func appendField(_ b: UnsafeRawBufferPointer) -> Int32 {
        if inValue { finishHeader() }
        field.append(contentsOf: b)
        return countHeaderBytes(b.count)
    }

    fileprivate func appendValue(_ b: UnsafeRawBufferPointer) -> Int32 {
        // Control bytes (NUL included) are refused here: http_parser checks them only on some
        // paths, so whether it refused one depended on where a read happened to split the
        // request (found by the http1 fuzz target: 1 request whole, 0 in 64-byte reads).
        if b.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            failure = .badRequest("malformed HTTP/1.1 request: invalid character in header value")
            return 1
        }
        inValue = true
        value.append(contentsOf: b)
        return countHeaderBytes(b.count)
    }

    private func finishHeader() {
        // Names lowercased in place (ASCII: the parser accepts only token characters in them).
        for i in field.indices where field[i] >= 0x41 && field[i] <= 0x5A { field[i] |= 0x20 }
        if headers.isEmpty { headers.reserveCapacity(12) }
        headers.append((name: String(decoding: field, as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        inValue = false
    }

    fileprivate func headersComplete() -> Int32 {
        if inValue || !field.isEmpty { finishHeader() }
        headersDone = true
        if parser.pointee.http_major != 1 || parser.pointee.http_minor > 1 {
            failure = .versionNotSupported
            return -1
        }
        if parser.pointee.content_length != UInt64.max, parser.pointee.content_length > UInt64(limits.maxBodyBytes) {
            failure = .bodyTooLarge
            return -1
        }
        if headers.contains(where: { $0.name == "expect" && $0.value.lowercased() == "100-continue" }) {
            interim.append(contentsOf: "HTTP/1.1 100 Continue\r\n\r\n".utf8)
        }
        return 0
    }

    fileprivate func appendBody(_ b: UnsafeRawBufferPointer) -> Int32 {
        if body.count + b.count > limits.maxBodyBytes { failure = .bodyTooLarge; return 1 }
        body.append(contentsOf: b)
        return 0
    }

    fileprivate func messageComplete() -> Int32 {
        // An upgrade request is refused, never answered: whether `feed` saw the upgrade before or
        // after this callback depended on where a read split the request (found by the http1
        // fuzz target: served when it came in one read, refused when it came in pieces).
        if pt_http_upgrade(parser) != 0 {
            failure = .badRequest("protocol upgrade is not supported on this port")
            return 1
        }
        let method = String(cString: http_method_str(http_method(rawValue: pt_http_method(parser))))
        let request = HTTPRequest(method: method, target: String(decoding: url, as: UTF8.self),
                                  headers: headers, body: body, peer: peer)
        completed.append(Completed(request: request, keepAlive: http_should_keep_alive(parser) != 0))
        messageStarted = nil
        headers = []
        body = []
        return 0
    }
}

// C callbacks: recover the session from `parser->data` (unretained; the session owns the
// parser and outlives every call into it), record, return. Nonzero stops the parser.

@inline(__always)
private func session(_ p: UnsafeMutablePointer<http_parser>?) -> H1Session {
    Unmanaged<H1Session>.fromOpaque(p!.pointee.data).takeUnretainedValue()
}

@inline(__always)
private func raw(_ at: UnsafePointer<CChar>?, _ len: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: at, count: len)
}

private func h1MessageBegin(_ p: UnsafeMutablePointer<http_parser>?) -> Int32 { session(p).messageBegin() }
private func h1URL(_ p: UnsafeMutablePointer<http_parser>?, _ at: UnsafePointer<CChar>?, _ len: Int) -> Int32 { session(p).appendURL(raw(at, len)) }
private func h1Field(_ p: UnsafeMutablePointer<http_parser>?, _ at: UnsafePointer<CChar>?, _ len: Int) -> Int32 { session(p).appendField(raw(at, len)) }
private func h1Value(_ p: UnsafeMutablePointer<http_parser>?, _ at: UnsafePointer<CChar>?, _ len: Int) -> Int32 { session(p).appendValue(raw(at, len)) }
private func h1HeadersComplete(_ p: UnsafeMutablePointer<http_parser>?) -> Int32 { session(p).headersComplete() }
private func h1Body(_ p: UnsafeMutablePointer<http_parser>?, _ at: UnsafePointer<CChar>?, _ len: Int) -> Int32 { session(p).appendBody(raw(at, len)) }
private func h1MessageComplete(_ p: UnsafeMutablePointer<http_parser>?) -> Int32 { session(p).messageComplete() }

/// The callback table; http_parser only reads it.
nonisolated(unsafe) private var h1Settings: http_parser_settings = {
    var s = http_parser_settings()
    s.on_message_begin = h1MessageBegin
    s.on_url = h1URL
    s.on_header_field = h1Field
    s.on_header_value = h1Value
    s.on_headers_complete = h1HeadersComplete
    s.on_body = h1Body
    s.on_message_complete = h1MessageComplete
    return s
}()
