import Synchronization

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

    /// A request id: 16 hex digits, a random per-process prefix and a counter (unique within
    /// the process, no syscall per call).
    public static func newRequestID() -> String {
        let n = requestCounter.add(1, ordering: .relaxed).newValue
        return hex8(requestPrefix) + hex8(UInt32(truncatingIfNeeded: n))
    }

    private static func hex8(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

private let requestPrefix = UInt32.random(in: 0...UInt32.max)
private let requestCounter = Atomic<UInt64>(0)
