import CSHA256

/// SHA-256 as lowercase hex: Meta wants `external_id`, `em` and `ph` hashed. The rounds are the
/// shared C implementation (`CSHA256`, also used to pin plugin files).
public enum SHA256Hex {
    public static func of(_ text: String) -> String { of(Array(text.utf8)) }

    public static func of(_ message: [UInt8]) -> String {
        var ctx = pt_sha256_ctx()
        pt_sha256_init(&ctx)
        message.withUnsafeBytes { if let base = $0.baseAddress { pt_sha256_update(&ctx, base, $0.count) } }
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBufferPointer { pt_sha256_final(&ctx, $0.baseAddress!) }
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in digest { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
