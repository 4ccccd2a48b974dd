import Testing
@testable import ProtoCodec

/// A small deterministic generator, so a failing input can be reproduced from the seed.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

@Suite struct FuzzTests {
    /// Random bytes and mutations of valid messages: decoding either throws or yields a message
    /// that re-encodes; it never crashes (leaks would show under valgrind/ASan runs of this test).
    @Test func decodingArbitraryBytesNeverCrashes() throws {
        var rng = SplitMix64(state: 0x5eed)
        let types = ProtoSchema.messageTypeNames()
        let seeds: [[UInt8]] = [
            try ProtoCodec.encode(ProtoMessage("pixtrack.testing.v1.AllKinds", [
                "f_string": .string("abc"), "r_int32": .list([.int32(1), .int32(2)]),
                "f_child": .message(ProtoMessage("pixtrack.testing.v1.AllKinds", ["f_bytes": .bytes([1, 2, 3])])),
                "m_string": .stringMap(["a": "b"], entryType: "pixtrack.testing.v1.AllKinds.MStringEntry"),
            ])),
            ProtoSchema.fileDescriptorSet.prefix(400).map { $0 },
        ]
        var decoded = 0
        for i in 0..<20_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = seeds[i % 4 == 1 ? 0 : 1]
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let type = i % 3 == 0 ? "pixtrack.testing.v1.AllKinds" : types[Int.random(in: 0..<types.count, using: &rng)]
            if let m = try? ProtoCodec.decode(bytes, as: type) {
                decoded += 1
                _ = try ProtoCodec.encode(m)
            }
        }
        #expect(decoded > 0)
    }
}
