import Testing
@testable import PluginHost

@Suite struct SHA256Tests {
    @Test func knownAnswers() {
        #expect(SHA256.hexDigest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func chunkingDoesNotChangeTheDigest() {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var h = SHA256()
        var i = 0
        for size in [1, 63, 64, 65, 127, 1000, 4096] + Array(repeating: 7777, count: 20) where i < data.count {
            let end = min(data.count, i + size)
            h.update(Array(data[i..<end]))
            i = end
        }
        if i < data.count { h.update(Array(data[i...])) }
        #expect(SHA256.hex(h.finish()) == SHA256.hexDigest(data))
    }
}
