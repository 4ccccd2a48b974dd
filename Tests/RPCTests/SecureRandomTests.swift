import RPC
import Testing

@Suite struct SecureRandomTests {
    /// Across many refills of the 4 KiB buffer: every byte value shows up, no two 16-byte draws
    /// repeat, and draws that straddle a refill are whole.
    @Test func bytesLookRandomAndNeverRepeat() {
        var seen = Set<[UInt8]>()
        var counts = [Int](repeating: 0, count: 256)
        for i in 0..<20_000 {
            let b = SecureRandom.bytes(i % 7 == 0 ? 33 : 16)
            #expect(b.count == (i % 7 == 0 ? 33 : 16))
            for x in b { counts[Int(x)] += 1 }
            #expect(seen.insert(Array(b.prefix(16))).inserted)
        }
        // ~1,500 expected per value: a stuck or biased source falls far outside.
        #expect(counts.allSatisfy { $0 > 900 && $0 < 2_200 }, "\(counts.min()!)...\(counts.max()!)")
    }

    @Test func worksAsAGenerator() {
        var g = SecureRandom()
        let draws = (0..<1000).map { _ in Int.random(in: 0..<10, using: &g) }
        #expect(Set(draws) == Set(0..<10))
        #expect(g.next() != g.next())
    }
}
