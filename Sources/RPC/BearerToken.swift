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

    /// A request id: 15 hex digits, a random per-process prefix (28 bits) and a counter (32 bits):
    /// unique within the process for four billion calls, no syscall per call, and short enough
    /// to be a small (inline, never heap-allocated) Swift string.
    public static func newRequestID() -> String {
        let n = requestCounter.add(1, ordering: .relaxed).newValue
        let v = UInt64(requestPrefix) << 32 | UInt64(UInt32(truncatingIfNeeded: n))
        return String(unsafeUninitializedCapacity: 15) { buf in
            for i in 0..<15 { buf[i] = hexDigits[Int((v >> UInt64(56 - 4 * i)) & 0xF)] }
            return 15
        }
    }
}

private let requestPrefix = UInt32.random(in: 0...0x0FFF_FFFF)
private let requestCounter = Atomic<UInt64>(0)
private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
