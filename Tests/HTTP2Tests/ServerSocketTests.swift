import Glibc
import SystemTestSupport
import Testing
@testable import HTTP2
import RPC

/// The server started in-process on port 0, poked with raw sockets (no client library).
@Suite struct ServerSocketTests {
    static func startServer(token: String? = nil) throws -> (HTTP2Server, Int) {
        var cfg = HTTP2Server.Configuration()
        cfg.port = 0
        cfg.authToken = token
        let router = RPCRouter([RPCMethod(service: "t.T", method: "Echo", kind: .unary { req, _ in req })])
        let server = try HTTP2Server(configuration: cfg, router: router, logger: Logger(minimum: .error))
        return (server, try server.start())
    }

    /// Connects, sends `bytes`, reads until the server closes or 2 s pass.
    static func exchange(port: Int, _ bytes: [UInt8]) -> [UInt8] {
        guard let fd = connectLoopback(port: port, receiveTimeoutSeconds: 2) else { return [] }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    /// A blocking TCP connection to 127.0.0.1:`port` whose reads give up after the timeout.
    static func connectLoopback(port: Int, receiveTimeoutSeconds: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { close(fd); return nil }
        return fd
    }

    @Test func plainHTTP1GetsAClearAnswerAndTheServerLives() async throws {
        let (server, port) = try Self.startServer()
        // Blocking reads (up to 2 s each) on a thread of their own, never on the cooperative pool.
        let reply = await onThread { Self.exchange(port: port, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) }
        #expect(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 "))
        // A broken HTTP/2 connection (right preface, then a garbage frame) gets a GOAWAY.
        let garbage = Array(H2Connection.preface) + [0, 0, 4, 0xFF, 0, 0, 0, 0, 0] + [0, 0, 0, 0]
        let goaway = await onThread { Self.exchange(port: port, garbage) }
        #expect(goaway.count >= 9)
        #expect(Self.frameTypes(goaway).contains(7), "expected a GOAWAY frame, got types \(Self.frameTypes(goaway))")
        _ = await server.shutdown(grace: .seconds(1))
    }

    @Test func bearerComparisonAcceptsOnlyTheExactToken() {
        #expect(BearerToken.matches(Array("Bearer s3cret".utf8), token: "s3cret"))
        #expect(!BearerToken.matches(Array("Bearer s3cre".utf8), token: "s3cret"))
        #expect(!BearerToken.matches(Array("Bearer s3cret2".utf8), token: "s3cret"))
        #expect(!BearerToken.matches(Array("bearer s3cret".utf8), token: "s3cret"))
        #expect(!BearerToken.matches(nil, token: "s3cret"))
    }

    @Test func contentTypeRules() {
        #expect(CallDispatcher.isGRPCContentType("application/grpc"))
        #expect(CallDispatcher.isGRPCContentType("application/grpc+proto"))
        #expect(CallDispatcher.isGRPCContentType("application/grpc; charset=utf-8"))
        #expect(!CallDispatcher.isGRPCContentType("application/grpc-web"))
        #expect(!CallDispatcher.isGRPCContentType("application/json"))
        #expect(!CallDispatcher.isGRPCContentType(""))
    }

    /// Frame types in a server byte stream (after its SETTINGS), for assertions.
    static func frameTypes(_ bytes: [UInt8]) -> [UInt8] {
        var types: [UInt8] = []
        var i = 0
        while i + 9 <= bytes.count {
            let len = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            types.append(bytes[i + 3])
            i += 9 + len
        }
        return types
    }
}
