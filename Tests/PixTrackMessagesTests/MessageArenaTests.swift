@testable import PixTrackMessages
import Testing

/// The bump allocator behind every generated message's encoding: right bytes, few blocks,
/// alignment, big values, refusals.
@Suite struct MessageArenaTests {
    static func echo(entries: Int, payload: Int) -> Pixtrack_Testing_V1_EchoResponse {
        var r = Pixtrack_Testing_V1_EchoResponse()
        r.text = "héllo, wörld"
        r.payload = (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        r.metadata = (0..<entries).map { i in
            var m = Pixtrack_Testing_V1_MetadataEntry()
            m.key = "key-\(i)"
            m.value = String(repeating: "v", count: i)
            return m
        }
        return r
    }

    @Test(arguments: [(0, 0), (12, 10), (200, 100), (3, 100_000)])
    func messagesRoundTripThroughTheArena(entries: Int, payload: Int) throws {
        let message = Self.echo(entries: entries, payload: payload)
        #expect(try Pixtrack_Testing_V1_EchoResponse(serializedBytes: message.serializedBytes()) == message)
    }

    @Test func aMessageWithADozenStringsTakesOneBlock() throws {
        let a = MessageArena()
        _ = try withExtendedLifetime(a) { try Self.echo(entries: 12, payload: 10).build(a) }
        #expect(a.blockCount == 1)
    }

    @Test func chunksGrowAndABigValueGetsABlockOfItsOwn() throws {
        let a = MessageArena()
        let small = try (0..<100).map { try a.string("string number \($0), about forty bytes long", "s") }
        // 100 × 48 bytes: a 2 KiB chunk, then a 4 KiB one (two blocks), never one per string.
        #expect(a.blockCount == 2)
        let big = a.bytes([UInt8](repeating: 7, count: 50_000))
        #expect(a.blockCount == 3)
        #expect(big.len == 50_000 && big.data[49_999] == 7)
        // Earlier values are intact after the arena moved on.
        for (i, p) in small.enumerated() { #expect(String(cString: p) == "string number \(i), about forty bytes long") }
    }

    @Test func everyValueIsAlignedAndZeroed() {
        let a = MessageArena()
        for n in [1, 3, 7, 17, 33] {
            _ = a.bytes([UInt8](repeating: 1, count: n))
            let p = a.array(UInt64.self, 4)
            #expect(Int(bitPattern: p) % 16 == 0)
            #expect((0..<4).allSatisfy { p[$0] == 0 })
        }
    }

    @Test func aNULInAStringIsRefusedAndAnEmptyOneIsEmpty() throws {
        let a = MessageArena()
        #expect(throws: MessageCodingError.self) { try a.string("a\u{0}b", "text") }
        #expect(String(cString: try a.string("", "text")) == "")
        var r = Pixtrack_Testing_V1_EchoResponse()
        r.text = "nul\u{0}inside"
        #expect(throws: MessageCodingError.self) { try r.serializedBytes() }
    }
}
