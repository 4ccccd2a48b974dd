import Glibc
import HTTP2
import ProtoCodec
import RPC
import StandardServices
import WebRoutes

/// `http2`: the bytes a client sends to the real server — `HTTP2Server` in this process, on a
/// loopback port, one fresh connection per input: the preface sniffing, nghttp2's session
/// input and our callbacks, `CallDispatcher`, the deframer, budgets, the handlers (health,
/// reflection, `TestService/Echo`, HTTP routes and Connect calls over HTTP/2 and HTTP/1.1).
///
/// Input: the client's bytes, sent at once; the client reads until the server closes after
/// the client's EOF. Invariants: the server closes the connection after EOF; what it sent is
/// whole HTTP/2 frames (SETTINGS first, only frame types a server sends, on legal streams) or
/// whole HTTP/1.1 responses, cut short only by a reset; and once the connection is gone the
/// server holds nothing for it (no connection, no call in flight, no request byte counted).
let http2Target = FuzzTarget(name: "http2", summary: "HTTP2Server over loopback: HTTP/2 (and HTTP/1.1) client bytes",
                             maxLength: 16 << 10) {
    let server = try FuzzServer()
    return { server.exchange($0) }
}

/// What an HTTP/2 client sends first.
enum H2Preface {
    static let bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
}

/// The token `TestService/Echo` and Connect calls need (seeds send it).
let fuzzBearerToken = "fuzz-token"

private final class FuzzServer: Sendable {
    let server: HTTP2Server
    let port: Int

    init() throws {
        var config = HTTP2Server.Configuration()
        config.port = 0
        config.eventLoops = 1
        config.authToken = fuzzBearerToken
        let logger = Logger(minimum: .error)
        let metrics = Metrics()
        // Echo only: Sleep would leave tasks running after their connection is gone.
        var router = RPCRouter(StandardServices.testing().filter { !$0.path.hasSuffix("/Sleep") })
        let served = [StandardServices.testServiceName, StandardServices.healthServiceName]
        router.register(contentsOf: StandardServices.health(knownServices: served, isServing: { true }))
        router.register(contentsOf: StandardServices.reflection(services: served, index: try ReflectionIndex.embedded()))
        var routes = HTTPRoutes()
        StandardRoutes.install(into: &routes, metrics: metrics, readiness: [])
        routes.fallback(ConnectGateway(router: router, authToken: fuzzBearerToken, metrics: metrics, logger: logger).handler)
        server = try HTTP2Server(configuration: config, router: router, httpHandler: routes.handler, logger: logger, metrics: metrics)
        port = try server.start()
    }

    func exchange(_ input: UnsafeRawBufferPointer) {
        let (output, reset) = send(input)
        trace("\(output.count) bytes back\(reset ? ", connection reset" : "")")
        if input.starts(with: H2Preface.bytes) {
            checkHTTP2(output, reset: reset)
        } else if H2Preface.bytes.starts(with: input) {
            require(output.isEmpty, "\(output.count) bytes answered to a partial preface")
        } else {
            checkHTTP1(output, reset: reset)
        }
        waitUntilIdle()
    }

    /// Connects, writes `input` (reading meanwhile), lets the server answer what it started,
    /// half-closes and reads until the server closes. Returns what the server sent and whether
    /// the connection ended with a reset (the tail may then be lost).
    ///
    /// Answers come from handler tasks after the read that started them, so the client waits
    /// before its EOF (on EOF the server closes, cancelling what runs): for HTTP/2 input made
    /// of whole frames, until a PING sent after the input is acknowledged (nghttp2 has then
    /// taken every frame before it) and no call is in flight; then, or for other input, until
    /// the server has been quiet for 0.3 ms (a stream left open never answers: 5 ms at most).
    private func send(_ input: UnsafeRawBufferPointer) -> (output: [UInt8], reset: Bool) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        require(fd >= 0, "socket: \(String(cString: strerror(errno)))")
        defer { closeWithReset(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        require(rc == 0, "connect to the fuzz server: \(String(cString: strerror(errno)))")
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)

        var payload = Array(input)
        let ack: [UInt8]? = Self.wholeHTTP2Frames(payload) ? [0, 0, 8, 6, 1, 0, 0, 0, 0] + Self.barrier : nil
        if ack != nil { payload += [0, 0, 8, 6, 0, 0, 0, 0, 0] + Self.barrier }

        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var written = 0
        var halfClosed = false
        var reset = false
        var acknowledged = ack == nil
        let started = ContinuousClock.now
        var settling: ContinuousClock.Instant?
        while true {
            let now = ContinuousClock.now
            require(now - started < .seconds(10), "the server kept the connection open 10 s (\(written) of \(payload.count) bytes written, EOF sent: \(halfClosed))")
            var events = Int16(POLLIN)
            if written < payload.count { events |= Int16(POLLOUT) }
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            if written == payload.count, !halfClosed { usleep(300) }
            let ready = poll(&pfd, 1, halfClosed ? 1000 : written < payload.count ? 1 : 0)
            if written < payload.count, pfd.revents & Int16(POLLOUT) != 0 {
                let n = payload.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + written, payload.count - written, Int32(MSG_NOSIGNAL)) }
                if n > 0 {
                    written += n
                } else if n < 0, errno != EAGAIN, errno != EINTR {
                    reset = true  // the server closed before taking everything (EPIPE, ECONNRESET)
                    written = payload.count
                }
            }
            if pfd.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 {
                    output += buffer[0..<n]
                    if !acknowledged, let ack { acknowledged = output.firstRange(of: ack) != nil }
                } else if n == 0 {
                    break
                } else if errno != EAGAIN, errno != EINTR {
                    reset = true
                    break
                }
            }
            guard written == payload.count, !halfClosed else { continue }
            if settling == nil { settling = now }
            let settled = acknowledged
                ? ready == 0 && (server.counters.inFlight.load(ordering: .relaxed) == 0 || now - settling! > .milliseconds(5))
                : now - settling! > .milliseconds(50)  // a PING the server never took: it is in trouble anyway
            if settled {
                shutdown(fd, Int32(SHUT_WR))
                halfClosed = true
            }
        }
        return (output, reset)
    }

    /// The PING payload of the barrier after HTTP/2 input.
    private static let barrier = Array("pixtrack".utf8)

    /// The preface, then one or more whole frames and nothing else.
    private static func wholeHTTP2Frames(_ bytes: [UInt8]) -> Bool {
        var i = H2Preface.bytes.count
        guard bytes.starts(with: H2Preface.bytes), bytes.count > i else { return false }
        while i + 9 <= bytes.count {
            i += 9 + (Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]))
        }
        return i == bytes.count
    }

    /// SO_LINGER 0: a reset instead of a FIN, so no socket of ours or the server's waits in
    /// TIME_WAIT (thousands of connections a second would run out of ports).
    private func closeWithReset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        Glibc.close(fd)
    }

    /// Whole frames; SETTINGS first; types a server sends, on the streams they belong to.
    private func checkHTTP2(_ out: [UInt8], reset: Bool) {
        var i = 0
        var first = true
        while i < out.count {
            guard i + 9 <= out.count else { break }
            let length = Int(out[i]) << 16 | Int(out[i + 1]) << 8 | Int(out[i + 2])
            let type = out[i + 3]
            let flags = out[i + 4]
            trace("frame type \(type) flags \(flags) stream \(out[i + 8]) length \(length)")
            let stream = UInt32(out[i + 5]) << 24 | UInt32(out[i + 6]) << 16 | UInt32(out[i + 7]) << 8 | UInt32(out[i + 8])
            if first {
                require(type == 4 && flags & 1 == 0 && stream == 0, "the server's first frame is type \(type) flags \(flags) on stream \(stream), not its SETTINGS")
                first = false
            }
            require(stream & 0x8000_0000 == 0, "reserved stream-id bit set in a type \(type) frame")
            switch type {
            case 0, 1, 9: require(stream != 0 && stream % 2 == 1, "type \(type) frame on stream \(stream)")
            case 3: require(stream != 0, "RST_STREAM on stream 0")
            case 4, 6, 7: require(stream == 0, "type \(type) frame on stream \(stream)")
            case 8: break
            default: require(false, "the server sent a frame of type \(type) (PRIORITY, PUSH_PROMISE or unknown)")
            }
            i += 9 + length
        }
        require(i == out.count || reset, "\(out.count - min(i, out.count)) bytes of a cut frame at the end of a connection the server closed")
    }

    /// Whole responses: status line, headers with the content-length we always write, body.
    private func checkHTTP1(_ out: [UInt8], reset: Bool) {
        let statusLine = Array("HTTP/1.1 ".utf8)
        let headEnd = Array("\r\n\r\n".utf8)
        var rest = out[...]
        while !rest.isEmpty {
            guard let end = rest.firstRange(of: headEnd) else {
                require(reset, "a response head without its blank line: \(String(decoding: rest.prefix(200), as: UTF8.self))")
                return
            }
            let head = String(decoding: rest[rest.startIndex..<end.lowerBound], as: UTF8.self)
            require(rest.starts(with: statusLine), "a response that does not start with HTTP/1.1: \(head.prefix(200))")
            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
            let status = Int(lines[0].dropFirst(statusLine.count).prefix(3)) ?? 0
            require((100...599).contains(status), "status line \(lines[0])")
            trace(String(lines[0]))
            rest = rest[end.upperBound...]
            if status == 100 { continue }
            let length = lines.dropFirst().compactMap { line -> Int? in
                let kv = line.split(separator: ":", maxSplits: 1)
                guard kv.count == 2, kv[0].lowercased() == "content-length" else { return nil }
                return Int(kv[1].trimmingPrefix(" "))
            }
            require(length.count == 1, "\(length.count) content-length headers in \(head.prefix(300))")
            guard rest.count >= length[0] else {
                require(reset, "a \(length[0])-byte body cut at \(rest.count) bytes")
                return
            }
            rest = rest.dropFirst(length[0])
        }
    }

    /// The connection is gone: nothing may stay counted for it.
    private func waitUntilIdle() {
        let c = server.counters
        let started = ContinuousClock.now
        while true {
            let connections = c.connections.load(ordering: .relaxed)
            let inFlight = c.inFlight.load(ordering: .relaxed)
            let buffered = c.bufferedBytes.load(ordering: .relaxed)
            if connections == 0 && inFlight == 0 && buffered == 0 { return }
            require(ContinuousClock.now - started < .seconds(2),
                    "2 s after the connection closed the server still counts \(connections) connections, \(inFlight) calls in flight, \(buffered) request bytes held")
            usleep(20)
        }
    }
}
