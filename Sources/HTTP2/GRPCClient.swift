import SystemCalls
import CNghttp2
import Glibc
import RPC
import TLS

/// A small blocking gRPC client over HTTP/2 on nghttp2 (prior knowledge on plaintext, ALPN `h2`
/// over TLS), for the CLI and tests. One connection, calls made one after another from one thread; not for serving paths.
public final class GRPCClient {
    /// What a call came back with: messages, final status, and the headers and trailers.
    public struct Response: Sendable {
        public var messages: [[UInt8]] = []
        public var code: RPCCode = .unknown
        public var message = ""
        public var headers: [(String, String)] = []
        public var trailers: [(String, String)] = []
        public var httpStatus = 0
    }

    public struct ClientError: Error, CustomStringConvertible {
        public let code: RPCCode
        public let description: String
    }

    private let fd: Int32
    private let authority: String
    private let tls: TLSSession?
    private var session: OpaquePointer?
    fileprivate var current: Response?
    fileprivate var currentStream: Int32 = -1
    fileprivate var closed = false
    fileprivate var body: [UInt8] = []
    fileprivate var bodyOffset = 0
    fileprivate var inTrailers = false
    /// The debug text of the server's GOAWAY, if it sent one with text.
    fileprivate var goawayReason: String?
    /// A streaming call's message sink and its deframer.
    private var streaming: (([UInt8]) -> Void, GRPCDeframer)?

    /// Connects to `host:port` within `timeout`. With `tls`, the server must present a
    /// certificate the context trusts for `serverName` (default: `host`) and agree to `h2`.
    public init(host: String, port: Int, timeout: Duration, tls: TLSContext? = nil, serverName: String? = nil) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else {
            throw ClientError(code: .unavailable, description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(res) }
        guard let fd = try? Syscalls.socket(family: ai.pointee.ai_family, type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)) else {
            throw ClientError(code: .unavailable, description: "socket failed")
        }
        self.fd = fd
        authority = "\(host):\(port)"
        try? Syscalls.setSendTimeout(fd, timeout)
        do {
            try Syscalls.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
        } catch {
            Syscalls.close(fd)
            throw ClientError(code: .unavailable, description: "cannot connect to \(host):\(port): \(error.reason)")
        }
        try? Syscalls.setOption(fd, level: Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        if let tls {
            guard let session = TLSSession(tls, serverName: serverName ?? host) else {
                Syscalls.close(fd)
                throw ClientError(code: .internal, description: "cannot start TLS to \(host)")
            }
            self.tls = session
            do {
                early = try session.handshake(fd: fd, deadline: .now + timeout)
            } catch {
                Syscalls.close(fd)
                throw ClientError(code: error.timedOut ? .deadlineExceeded : .unavailable,
                                  description: "TLS handshake with \(host):\(port) failed: \(error.description)")
            }
            guard session.alpn == "h2" else {
                Syscalls.close(fd)
                throw ClientError(code: .unavailable, description: "TLS handshake with \(host):\(port) failed: the server did not agree to HTTP/2 (ALPN h2)")
            }
        } else {
            self.tls = nil
        }
        var s: OpaquePointer?
        nghttp2_session_client_new(&s, clientCallbacks, Unmanaged.passUnretained(self).toOpaque())
        session = s
        _ = nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil, 0)
    }

    /// Plaintext that arrived with the end of the TLS handshake, read before the first answer.
    private var early: [UInt8] = []

    deinit {
        if let session { nghttp2_session_del(session) }
        Syscalls.close(fd)
    }

    /// One call: sends `requests` (each framed), half-closes, waits for the status.
    /// `timeout` bounds the whole call and is sent as `grpc-timeout`.
    /// With `onMessage`, each response message is handed over as it arrives (a server-streaming
    /// call such as WatchPayments) instead of being collected in `Response.messages`.
    public func call(_ path: String, requests: [[UInt8]], metadata: [(String, String)] = [], timeout: Duration,
                     onMessage: (([UInt8]) -> Void)? = nil) throws -> Response {
        guard let session, !closed else { throw ClientError(code: .unavailable, description: "connection closed") }
        streaming = onMessage.map { ($0, GRPCDeframer(limit: 64 << 20)) }
        defer { streaming = nil }
        current = Response()
        inTrailers = false
        body = requests.flatMap { GRPCWire.frame($0) }
        bodyOffset = 0
        var headers: [(String, String)] = [
            (":method", "POST"), (":scheme", tls == nil ? "http" : "https"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", GRPCWire.formatTimeout(timeout)),
            ("user-agent", "pixtrack-cli"),
        ]
        headers += metadata.map { ($0.0.lowercased(), $0.1) }
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: clientReadBody)
        currentStream = withHeaderList(headers) { nghttp2_submit_request(session, nil, $0, $1, &provider, nil) }
        guard currentStream > 0 else { throw ClientError(code: .internal, description: "cannot submit request") }
        let deadline = ContinuousClock.now + timeout + .milliseconds(500)
        while currentStream > 0 {
            try pump(until: deadline)
        }
        guard let r = current else { throw ClientError(code: .internal, description: "no response") }
        return r
    }

    private func pump(until deadline: ContinuousClock.Instant) throws {
        guard let session else { return }
        while nghttp2_session_want_write(session) != 0 {
            var p: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &p)
            if n <= 0 { break }
            do {
                try transmit(UnsafeRawBufferPointer(start: p, count: n))
            } catch {
                closed = true
                // The server may have said why before closing (a GOAWAY with text): read it.
                var buf = [UInt8](repeating: 0, count: 4096)
                let got = buf.withUnsafeMutableBytes { try? Syscalls.recv(fd, into: $0, flags: Int32(MSG_DONTWAIT)) }
                if case .processed(let n) = got, tls == nil { _ = buf.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, n) } }
                if let reason = goawayReason { throw ClientError(code: .unavailable, description: "the server closed the connection: \(reason)") }
                throw error
            }
        }
        if !early.isEmpty {
            let bytes = early
            early = []
            let rv = bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
            if rv < 0 { closed = true; throw ClientError(code: .internal, description: "HTTP/2 error: \(String(cString: nghttp2_strerror(Int32(rv))))") }
            return
        }
        let left = deadline - ContinuousClock.now
        guard left > .zero else { throw ClientError(code: .deadlineExceeded, description: "no answer before the deadline") }
        let ms = Int32(min(Int64(left / .milliseconds(1)) + 1, 60_000))
        guard let ready = try? Syscalls.poll(fd, events: Int16(POLLIN), timeoutMs: ms), ready != 0 else { return }
        var buf = [UInt8](repeating: 0, count: 65536)
        let n: Int
        switch buf.withUnsafeMutableBytes({ try? Syscalls.recv(fd, into: $0) }) {
        case .processed(let k): n = k
        case .wouldBlock: return
        case .eof, nil:
            closed = true
            if currentStream > 0 { throw ClientError(code: .unavailable, description: "connection closed by the server") }
            return
        }
        var rv = 0
        if let tls {
            let outcome = buf.withUnsafeMutableBytes { raw in
                tls.receive(UnsafeRawBufferPointer(rebasing: raw[0..<n]), scratch: raw) { plain in
                    rv = nghttp2_session_mem_recv(session, plain.baseAddress?.assumingMemoryBound(to: UInt8.self), plain.count)
                    return rv >= 0
                }
            }
            if case .failed(let reason) = outcome { closed = true; throw ClientError(code: .unavailable, description: "TLS error: \(reason)") }
            if outcome == .closed { closed = true }
        } else {
            rv = buf.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, n) }
        }
        if rv < 0 { closed = true; throw ClientError(code: .internal, description: "HTTP/2 error: \(String(cString: nghttp2_strerror(Int32(rv))))") }
    }

    /// Writes `bytes` whole (encrypted first over TLS).
    private func transmit(_ bytes: UnsafeRawBufferPointer) throws {
        let lost = ClientError(code: .unavailable, description: "connection lost while sending")
        guard let tls else {
            guard TLSSession.sendAll(fd, bytes) else { throw lost }
            return
        }
        if case .failed(let reason) = tls.send(bytes) { throw ClientError(code: .unavailable, description: "TLS error: \(reason)") }
        var wire: [UInt8] = []
        tls.drain(into: &wire)
        guard wire.withUnsafeBytes({ TLSSession.sendAll(fd, $0) }) else { throw lost }
    }

    fileprivate func onHeader(_ name: String, _ value: String) {
        if name == ":status" { current?.httpStatus = Int(value) ?? 0; return }
        if inTrailers || name == "grpc-status" || name == "grpc-message" {
            current?.trailers.append((name, value))
        } else {
            current?.headers.append((name, value))
        }
    }

    fileprivate func finishStream(errorCode: UInt32) {
        guard var r = current else { return }
        var deframer = GRPCDeframer(limit: 64 << 20)
        let raw = r.messages.first ?? []
        r.messages = (try? raw.withUnsafeBytes { try deframer.append($0) }) ?? []
        if let s = r.trailers.first(where: { $0.0 == "grpc-status" })?.1, let v = Int(s), let c = RPCCode(rawValue: v) {
            r.code = c
            r.message = GRPCWire.percentDecode(r.trailers.first { $0.0 == "grpc-message" }?.1 ?? "")
        } else if errorCode != 0 {
            r.code = goawayReason == nil ? .internal : .unavailable
            r.message = "stream reset by the server (HTTP/2 error \(errorCode))" + (goawayReason.map { ": \($0)" } ?? "")
        } else {
            r.code = r.httpStatus == 200 ? .internal : Self.codeForHTTP(r.httpStatus)
            r.message = "no grpc-status in the response (HTTP \(r.httpStatus))"
        }
        current = r
        currentStream = -1
    }

    static func codeForHTTP(_ status: Int) -> RPCCode {
        switch status {
        case 400: .internal
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .unimplemented
        case 429, 502, 503, 504: .unavailable
        default: .unknown
        }
    }

    fileprivate func appendData(_ b: UnsafeRawBufferPointer) {
        if let (deliver, start) = streaming {
            var deframer = start
            let messages = (try? deframer.append(b)) ?? []
            streaming = (deliver, deframer)
            for m in messages { deliver(m) }
            return
        }
        if current?.messages.isEmpty == true { current?.messages.append([]) }
        current?.messages[0].append(contentsOf: b)
    }

    fileprivate func readBody(into buf: UnsafeMutableRawBufferPointer, flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = min(buf.count, body.count - bodyOffset)
        if n > 0 {
            body.withUnsafeBytes { buf.baseAddress!.copyMemory(from: $0.baseAddress! + bodyOffset, byteCount: n) }
            bodyOffset += n
        }
        if bodyOffset == body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
        return n
    }
}

@inline(__always)
private func client(_ ud: UnsafeMutableRawPointer?) -> GRPCClient {
    Unmanaged<GRPCClient>.fromOpaque(ud!).takeUnretainedValue()
}

private func clientOnHeader(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ name: UnsafePointer<UInt8>?, _ nlen: Int,
                            _ value: UnsafePointer<UInt8>?, _ vlen: Int, _ flags: UInt8, _ ud: UnsafeMutableRawPointer?) -> Int32 {
    let c = client(ud)
    guard let frame, frame.pointee.hd.stream_id == c.currentStream else { return 0 }
    c.onHeader(String(decoding: UnsafeBufferPointer(start: name, count: nlen), as: UTF8.self),
               String(decoding: UnsafeBufferPointer(start: value, count: vlen), as: UTF8.self))
    return 0
}

private func clientOnFrameRecv(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ ud: UnsafeMutableRawPointer?) -> Int32 {
    let c = client(ud)
    guard let frame else { return 0 }
    if frame.pointee.hd.type == UInt8(NGHTTP2_GOAWAY.rawValue), frame.pointee.goaway.opaque_data_len > 0 {
        c.goawayReason = String(decoding: UnsafeBufferPointer(start: frame.pointee.goaway.opaque_data, count: frame.pointee.goaway.opaque_data_len), as: UTF8.self)
    }
    guard frame.pointee.hd.stream_id == c.currentStream else { return 0 }
    if frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) { c.inTrailers = true }
    return 0
}

private func clientOnData(_ s: OpaquePointer?, _ flags: UInt8, _ sid: Int32, _ data: UnsafePointer<UInt8>?, _ len: Int, _ ud: UnsafeMutableRawPointer?) -> Int32 {
    let c = client(ud)
    if sid == c.currentStream { c.appendData(UnsafeRawBufferPointer(start: data, count: len)) }
    return 0
}

private func clientOnClose(_ s: OpaquePointer?, _ sid: Int32, _ err: UInt32, _ ud: UnsafeMutableRawPointer?) -> Int32 {
    let c = client(ud)
    if sid == c.currentStream { c.finishStream(errorCode: err) }
    return 0
}

private func clientReadBody(_ s: OpaquePointer?, _ sid: Int32, _ buf: UnsafeMutablePointer<UInt8>?, _ len: Int,
                            _ flags: UnsafeMutablePointer<UInt32>?, _ src: UnsafeMutablePointer<nghttp2_data_source>?,
                            _ ud: UnsafeMutableRawPointer?) -> Int {
    client(ud).readBody(into: UnsafeMutableRawBufferPointer(start: buf, count: len), flags: flags!)
}

nonisolated(unsafe) private let clientCallbacks: OpaquePointer = {
    var cbs: OpaquePointer?
    precondition(nghttp2_session_callbacks_new(&cbs) == 0)
    nghttp2_session_callbacks_set_on_header_callback(cbs, clientOnHeader)
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, clientOnFrameRecv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, clientOnData)
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, clientOnClose)
    return cbs!
}()
