import Foundation
import Glibc
import Synchronization

/// A tiny blocking HTTP/1.1 server on 127.0.0.1 that answers each request with the next scripted
/// response and records what it received. One connection at a time, `Connection: close`.
/// Enough to replay a gateway's recorded exchanges to a plugin under test; not a general server.
public final class ReplayServer: Sendable {
    public struct Request: Sendable {
        public let method: String
        /// Path without the query string.
        public let path: String
        public let query: [String: String]
        public let headers: [String: String]
        public let body: [UInt8]
    }

    public enum Response: Sendable {
        case answer(status: Int, headers: [String: String], body: [UInt8])
        /// Reads the request, then resets the connection without answering.
        case reset
    }

    public let port: Int
    private let listener: Int32
    private let state = Mutex<(script: [Response], routes: [String: Response], received: [Request], stopped: Bool)>(([], [:], [], false))

    public init() throws(ConformanceError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ConformanceError("socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw ConformanceError("bind/listen: \(String(cString: strerror(errno)))")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "replay-server"
        thread.start()
    }

    /// Replaces the queue of responses; each request consumes the first one.
    public func script(_ responses: [Response]) {
        state.withLock { $0.script = responses; $0.routes = [:]; $0.received = [] }
    }

    /// Answers by `"METHOD /path"` (path without query), for as many requests as come.
    public func route(_ routes: [String: Response]) {
        state.withLock { $0.script = []; $0.routes = routes; $0.received = [] }
    }

    /// Requests received since the last `script`.
    public var received: [Request] { state.withLock { $0.received } }

    /// Responses not consumed since the last `script`.
    public var unused: Int { state.withLock { $0.script.count } }

    public func stop() {
        state.withLock { $0.stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while !state.withLock({ $0.stopped }) {
            let conn = accept(listener, nil, nil)
            if conn < 0 {
                if errno == EINTR { continue }
                return
            }
            serve(conn)
        }
    }

    private func serve(_ fd: Int32) {
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let request = readRequest(fd) else { close(fd); return }
        let response: Response = state.withLock { s in
            s.received.append(request)
            if !s.script.isEmpty { return s.script.removeFirst() }
            if let r = s.routes["\(request.method.uppercased()) \(request.path)"] { return r }
            return .answer(status: 599, headers: ["Content-Type": "text/plain"], body: Array("unexpected request: no recorded exchange left".utf8))
        }
        switch response {
        case .reset:
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        case .answer(let status, let headers, let body):
            var head = "HTTP/1.1 \(status) \(status < 400 ? "OK" : "Error")\r\n"
            for (k, v) in headers where k.lowercased() != "content-length" { head += "\(k): \(v)\r\n" }
            head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            writeAll(fd, Array(head.utf8) + body)
        }
        close(fd)
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }

    private func readRequest(_ fd: Int32) -> Request? {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        var headerEnd: Int?
        while headerEnd == nil {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            data += buf[0..<n]
            headerEnd = find(data, [13, 10, 13, 10])
            if data.count > 1 << 20 { return nil }
        }
        let head = String(decoding: data[0..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(data[(headerEnd! + 4)...])
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while body.count < length {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            body += buf[0..<n]
        }
        let target = String(requestLine[1])
        let parts = target.split(separator: "?", maxSplits: 1)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                query[kv[0]] = kv.count > 1 ? kv[1] : ""
            }
        }
        return Request(method: String(requestLine[0]), path: String(parts.first ?? ""), query: query,
                       headers: headers, body: Array(body.prefix(length)))
    }

    private func find(_ data: [UInt8], _ needle: [UInt8]) -> Int? {
        guard data.count >= needle.count else { return nil }
        for i in 0...(data.count - needle.count) where data[i] == needle[0] && Array(data[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }
}

/// Why the conformance kit could not run.
public struct ConformanceError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
