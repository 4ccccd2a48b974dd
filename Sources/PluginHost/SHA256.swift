import CSHA256

/// SHA-256 (FIPS 180-4), for pinning plugin files. The rounds are C (`CSHA256`): hashing a few
/// megabytes of plugin takes milliseconds even in a debug build.
struct SHA256 {
    private var ctx = pt_sha256_ctx()

    init() { pt_sha256_init(&ctx) }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        pt_sha256_update(&ctx, base, bytes.count)
    }

    mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The 32-byte digest; the hasher is spent afterwards.
    mutating func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { pt_sha256_final(&ctx, $0.baseAddress!) }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// Lowercase hex SHA-256 of `bytes`.
    static func hexDigest(_ bytes: [UInt8]) -> String {
        var s = SHA256()
        s.update(bytes)
        return hex(s.finish())
    }
}
