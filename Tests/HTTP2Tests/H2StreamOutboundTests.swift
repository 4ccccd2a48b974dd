import Testing
@testable import HTTP2
import RPC

/// The response queue of a stream: a message queued alone keeps its bytes (its frame header
/// apart), messages behind it are framed into the buffer, and whatever sizes nghttp2 asks for,
/// the bytes come out as the gRPC framing of every message, in order.
@Suite struct H2StreamOutboundTests {
    /// Drains `s` in reads of `chunk` bytes.
    static func drain(_ s: H2Stream, chunk: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: chunk)
        while s.pendingOutbound > 0 {
            let n = buf.withUnsafeMutableBytes { s.takeOutbound(into: $0) }
            #expect(n > 0 && n <= chunk)
            guard n > 0 else { break }  // a bug here must fail the test, not hang it
            out += buf[0..<n]
        }
        return out
    }

    static func framed(_ messages: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        for m in messages { GRPCWire.appendFrame(m, to: &out) }
        return out
    }

    @Test(arguments: [1, 2, 3, 5, 6, 7, 64, 16_384])
    func everyReadSizeGivesTheFramedMessagesInOrder(chunk: Int) {
        let messages: [[UInt8]] = [Array("first".utf8), [], Array(repeating: 0xAB, count: 300), Array("last".utf8)]
        let s = H2Stream(id: 1, messageLimit: 1 << 20)
        s.queueMessage(messages[0])
        #expect(s.pendingOutbound == 10)
        s.queueMessage(messages[1])   // behind the first: framed into the buffer
        #expect(s.pendingOutbound == 15)
        var out = Self.drain(s, chunk: chunk)
        for m in messages[2...] { s.queueMessage(m) }   // queued alone again, then one behind it
        out += Self.drain(s, chunk: chunk)
        #expect(out == Self.framed(messages))
        #expect(s.pendingOutbound == 0 && s.outbound.isEmpty && s.framePrefixLeft == 0)
    }

    @Test func anEmptyMessageAloneIsItsFiveByteHeader() {
        let s = H2Stream(id: 1, messageLimit: 1 << 20)
        s.queueMessage([])
        #expect(Self.drain(s, chunk: 16) == [0, 0, 0, 0, 0])
    }
}
