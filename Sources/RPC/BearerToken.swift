/// Checks `authorization: Bearer <token>` for internal callers.
public enum BearerToken {
    /// Constant-time comparison of an `authorization` header value with `Bearer <token>`: the
    /// time taken does not depend on where the first differing byte is. The token is never logged.
    public static func matches(_ header: [UInt8]?, token: String) -> Bool {
        let expected = Array("Bearer \(token)".utf8)
        let given = header ?? []
        var diff = UInt8(given.count == expected.count ? 0 : 1)
        for i in 0..<expected.count {
            diff |= expected[i] ^ (i < given.count ? given[i] : 0)
        }
        return diff == 0
    }

    /// A request id: 16 random hex digits.
    public static func newRequestID() -> String {
        var g = SystemRandomNumberGenerator()
        let s = String(g.next() as UInt64, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
