import CSHA256

/// SHA-256 as lowercase hex: Meta wants `external_id`, `em` and `ph` hashed; HMAC-SHA256 signs
/// outbound payment notifications. The rounds are the shared C implementation (`CSHA256`, also
/// used to pin plugin files).
public enum SHA256Hex {
    public static func of(_ text: String) -> String {
        // Hashed straight from the string's UTF-8 into a stack digest: one allocation, the hex.
        var text = text
        var ctx = pt_sha256_ctx()
        pt_sha256_init(&ctx)
        text.withUTF8 { if let base = $0.baseAddress { pt_sha256_update(&ctx, base, $0.count) } }
        var digest: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        return withUnsafeMutableBytes(of: &digest) { d in
            pt_sha256_final(&ctx, d.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return hex(UnsafeRawBufferPointer(d))
        }
    }

    public static func of(_ message: [UInt8]) -> String { hex(digest([message])) }

    /// HMAC-SHA256 (RFC 2104) of `message` under `key`, lowercase hex.
    public static func hmac(key: [UInt8], message: [UInt8]) -> String {
        let block = 64
        var k = key.count > block ? digest([key]) : key
        k += [UInt8](repeating: 0, count: block - k.count)
        let inner = digest([k.map { $0 ^ 0x36 }, message])
        return hex(digest([k.map { $0 ^ 0x5c }, inner]))
    }

    /// SHA-256 of the concatenation of `parts`.
    static func digest(_ parts: [[UInt8]]) -> [UInt8] {
        var ctx = pt_sha256_ctx()
        pt_sha256_init(&ctx)
        for part in parts {
            part.withUnsafeBytes { if let base = $0.baseAddress { pt_sha256_update(&ctx, base, $0.count) } }
        }
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBufferPointer { pt_sha256_final(&ctx, $0.baseAddress!) }
        return digest
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { hex($0) } }

    static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            let digits: StaticString = "0123456789abcdef"
            let hex = digits.utf8Start
            for (i, b) in bytes.enumerated() {
                out[2 * i] = hex[Int(b >> 4)]
                out[2 * i + 1] = hex[Int(b & 15)]
            }
            return bytes.count * 2
        }
    }
}
