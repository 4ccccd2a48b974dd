import Glibc
import ProtoCodec
@testable import PluginHost
import Testing

/// The runner's hand-written frame codec is the protobuf encoding of `RunnerFrame`
/// (runner.proto): checked against the descriptor-driven codec both ways.
@Suite struct RunnerWireTests {
    static func sample() -> RunnerFrame {
        var f = RunnerFrame(.result, call: 1 << 40 | 7)
        f.payload = Array(0...255).map(UInt8.init) + [0, 0]
        f.hasPayload = true
        f.instance = 3
        f.status = -5
        f.message = "erro: cobrança não encontrada"
        f.problem = "p"
        f.deadlineMs = 123_456_789_012
        f.operation = 2
        f.logLevel = 3
        f.hello = .init(name: "sandbox", version: "1.0.0", description: "d", abiMajor: 1, abiMinor: 0, capabilities: 3, error: "")
        return f
    }

    @Test func handEncodedFramesDecodeWithTheSchema() throws {
        let f = Self.sample()
        let m = try ProtoCodec.decode(try #require(f.encoded()), as: "pixtrack.v1.RunnerFrame")
        #expect(m.enumValue("kind") == RunnerFrame.Kind.result.rawValue && m.uint64("call") == f.call)
        #expect(m.bytes("payload") == f.payload && m.bool("has_payload") && m.uint64("instance") == 3)
        #expect(m.int32("status") == -5 && m.string("message") == f.message && m.string("problem") == "p")
        #expect(m.int64("deadline_ms") == f.deadlineMs && m.int32("operation") == 2 && m.int32("log_level") == 3)
        #expect(m.message("hello")?.string("name") == "sandbox" && m.message("hello")?.uint64("capabilities") == 3)
    }

    @Test func schemaEncodedFramesDecodeByHand() throws {
        let m = ProtoMessage("pixtrack.v1.RunnerFrame", [
            "kind": .enumValue(RunnerFrame.Kind.http.rawValue), "call": .uint64(99), "payload": .bytes([1, 2, 3]),
            "status": .int32(-1), "message": .string("ü"), "deadline_ms": .int64(-2),
            "hello": .message(ProtoMessage("pixtrack.v1.RunnerHello", ["error": .string("refused"), "abi_minor": .uint32(4)])),
        ])
        let f = try #require(RunnerFrame.decode(try ProtoCodec.encode(m)))
        #expect(f.kind == .http && f.call == 99 && f.payload == [1, 2, 3] && f.status == -1 && f.message == "ü")
        #expect(f.deadlineMs == -2 && f.hello?.error == "refused" && f.hello?.abiMinor == 4)
    }

    @Test func malformedFramesAreRefused() {
        #expect(RunnerFrame.decode([]) == nil, "no kind")
        #expect(RunnerFrame.decode([0x08]) == nil, "truncated varint")
        #expect(RunnerFrame.decode([0x08, 0x04, 0x1a, 0x05, 0x01]) == nil, "bytes past the end")
        #expect(RunnerFrame.decode([0x08, 0x63]) == nil, "unknown kind")
        // Unknown fields are skipped (a newer peer's addition).
        #expect(RunnerFrame.decode([0x08, 0x04, 0xf8, 0x01, 0x05])?.kind == .result)
    }

    /// Sending never waits for the peer: frames far larger than the socket's buffer, sent while
    /// nobody reads, return at once; the reader then gets every frame whole and in order, small
    /// ones queued behind big ones included.
    @Test func sendingDoesNotWaitForThePeerAndFramesArriveWholeInOrder() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let writer = FrameSocket(fd: pair[0]), reader = FrameSocket(fd: pair[1])
        defer { Glibc.close(pair[0]); Glibc.close(pair[1]) }
        var sizes: [Int] = []
        let started = ContinuousClock.now
        for i in 0..<12 {
            var f = RunnerFrame(.result, call: UInt64(i))
            let size = i % 3 == 0 ? (3 << 20) + i : 100 + i
            f.payload = [UInt8](repeating: UInt8(i), count: size)
            sizes.append(size)
            #expect(writer.send(f))
        }
        // 12 MiB unread in a socket that holds a few hundred KiB: only a sender that hands the
        // rest to another thread gets here (wide bound: a loaded machine).
        #expect(ContinuousClock.now - started < .seconds(20))
        for i in 0..<12 {
            let f = try #require(reader.receive())
            #expect(f.call == UInt64(i) && f.payload.count == sizes[i] && f.payload.allSatisfy { $0 == UInt8(i) })
        }
    }

    /// A peer that never reads gets at most `maxQueued` bytes queued; beyond, sending is refused
    /// (the host then fails the call unsent instead of holding memory without bound).
    @Test func aPeerThatNeverReadsGetsABoundedQueue() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let writer = FrameSocket(fd: pair[0])
        defer { Glibc.close(pair[0]); Glibc.close(pair[1]) }
        var f = RunnerFrame(.result)
        f.payload = [UInt8](repeating: 1, count: 8 << 20)
        var accepted = 0
        for _ in 0..<20 where writer.send(f) { accepted += 1 }
        // One frame being written (by its thread) plus what fits in the queue.
        #expect(accepted >= 2 && accepted <= 1 + FrameSocket.maxQueued / (8 << 20))
    }

    /// Once the peer is gone, sending is refused at once.
    @Test func aGonePeerRefusesSends() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let writer = FrameSocket(fd: pair[0])
        Glibc.close(pair[1])
        defer { Glibc.close(pair[0]) }
        #expect(!writer.send(RunnerFrame(.result)))
        #expect(!writer.send(RunnerFrame(.result)))
    }
}
