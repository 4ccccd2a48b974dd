import SystemCalls
import CNghttp2
import Glibc
import SystemTestSupport
import Testing
@testable import HTTP2
import RPC

/// A streaming call refused after its response began (here: a request message over the size
/// limit once the handler has sent a message) ends with trailers carrying the refusal, not with
/// a second response HEADERS; over a real loopback socket with hand-written frames, so the
/// order of events is the test's.
@Suite struct StreamingRefusalTests {
    @Test func aRefusalAfterTheFirstResponseMessageArrivesAsTrailers() async throws {
        var cfg = HTTP2Server.Configuration()
        cfg.port = 0
        cfg.maxMessageBytes = 1024
        let stream = RPCMethod(service: "t.T", method: "Stream", kind: .bidiStreaming { requests, send, _ in
            try await send.send(Array("hello".utf8))
            for await _ in requests {}
        })
        let server = try HTTP2Server(configuration: cfg, router: RPCRouter([stream]), logger: Logger(minimum: .error))
        let port = try server.start()
        // The hand-written exchange blocks in recv: on a thread of its own, so the handler it
        // waits for can run on the cooperative pool meanwhile.
        try await onThread { try Self.exchange(port: port) }
        _ = await server.shutdown(grace: .seconds(1))
    }

    static func exchange(port: Int) throws {
        let peer = try Peer(port: port)
        var block: [UInt8] = []
        for (n, v) in [(":method", "POST"), (":scheme", "http"), (":path", "/t.T/Stream"), (":authority", "x"),
                       ("content-type", "application/grpc"), ("te", "trailers")] {
            block += [0, UInt8(n.utf8.count)] + Array(n.utf8) + [UInt8(v.utf8.count)] + Array(v.utf8)  // literal, not indexed
        }
        peer.send(H2Connection.preface + Peer.frame(type: 4, flags: 0, stream: 0, []) + Peer.frame(type: 1, flags: 0x4, stream: 1, block))

        // The handler's message comes first: the response has begun.
        let first = peer.frames(until: { $0.type == 0 && $0.stream == 1 })
        #expect(first.last?.type == 0, "no DATA from the handler; got frame types \(first.map(\.type))")
        #expect(first.contains { $0.type == 1 && $0.stream == 1 && $0.flags & 0x1 == 0 }, "response headers before the data")

        // Then a message announcing 4096 bytes, over the 1024-byte limit.
        peer.send(Peer.frame(type: 0, flags: 0, stream: 1, [0, 0, 0, 0x10, 0x00]))
        let rest = peer.frames(until: { $0.type == 1 && $0.stream == 1 && $0.flags & 0x1 != 0 })
        guard let trailers = rest.last, trailers.type == 1, trailers.flags & 0x1 != 0 else {
            Issue.record("no trailers after the refusal; got frame types \(rest.map(\.type))")
            return
        }
        var fields: [String: String] = [:]
        for f in (first + rest) where f.type == 1 && f.stream == 1 { fields = peer.decode(f.payload) }
        // Trailers, not a second response: HTTP/2 forbids pseudo-headers in a trailer block.
        #expect(fields[":status"] == nil, "a second response HEADERS instead of trailers: \(fields)")
        #expect(fields["grpc-status"] == String(RPCCode.resourceExhausted.rawValue))
        #expect(fields["grpc-message"] == "request message of 4096 bytes exceeds the limit of 1024 bytes")
    }
}

/// A raw HTTP/2 client end: writes bytes, reads frames, decodes header blocks in order.
private final class Peer {
    struct Frame { var type: UInt8; var flags: UInt8; var stream: Int32; var payload: [UInt8] }

    let fd: Int32
    private var buffer: [UInt8] = []
    private var inflater: OpaquePointer?

    init(port: Int) throws {
        guard let fd = ServerSocketTests.connectLoopback(port: port, receiveTimeoutSeconds: 10) else {
            throw SystemError(call: "connect", code: errno)
        }
        self.fd = fd
        nghttp2_hd_inflate_new(&inflater)
    }

    deinit {
        nghttp2_hd_inflate_del(inflater)
        close(fd)
    }

    static func frame(type: UInt8, flags: UInt8, stream: Int32, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        let s = UInt32(stream)
        return [UInt8(n >> 16), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(s >> 24), UInt8((s >> 16) & 0xFF), UInt8((s >> 8) & 0xFF), UInt8(s & 0xFF)] + payload
    }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Frames read until one matches `stop` (included), the peer closes, or 5 s pass.
    func frames(until stop: (Frame) -> Bool) -> [Frame] {
        var got: [Frame] = []
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            while buffer.count >= 9 {
                let n = Int(buffer[0]) << 16 | Int(buffer[1]) << 8 | Int(buffer[2])
                guard buffer.count >= 9 + n else { break }
                let id = Int32(bitPattern: UInt32(buffer[5] & 0x7F) << 24 | UInt32(buffer[6]) << 16 | UInt32(buffer[7]) << 8 | UInt32(buffer[8]))
                let f = Frame(type: buffer[3], flags: buffer[4], stream: id, payload: Array(buffer[9..<(9 + n)]))
                buffer.removeFirst(9 + n)
                got.append(f)
                if stop(f) { return got }
            }
            var chunk = [UInt8](repeating: 0, count: 16384)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 { return got }
            if n > 0 { buffer += chunk[0..<n] }
        }
        return got
    }

    /// The fields of one header block (blocks must be decoded in the order they came).
    func decode(_ block: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        block.withUnsafeBufferPointer { input in
            var p = input.baseAddress!
            var left = input.count
            while true {
                var nv = nghttp2_nv()
                var flags: Int32 = 0
                let used = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, p, left, 1)
                guard used >= 0 else { return }
                p += used
                left -= used
                if flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) != 0 {
                    fields[String(decoding: UnsafeBufferPointer(start: nv.name, count: nv.namelen), as: UTF8.self)] =
                        String(decoding: UnsafeBufferPointer(start: nv.value, count: nv.valuelen), as: UTF8.self)
                }
                if flags & Int32(NGHTTP2_HD_INFLATE_FINAL.rawValue) != 0 {
                    nghttp2_hd_inflate_end_headers(inflater)
                    return
                }
                if used == 0 && flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) == 0 { return }
            }
        }
        return fields
    }
}
