/// The gRPC-over-HTTP/2 wire rules that do not need a socket: the `grpc-timeout` header,
/// `grpc-message` percent-encoding and the 5-byte length-prefixed message framing.
public enum GRPCWire {
    /// Parses `grpc-timeout` (`1*8DIGIT unit`, unit one of H M S m u n) into a duration.
    /// Returns nil when malformed.
    public static func parseTimeout(_ value: String) -> Duration? {
        let bytes = Array(value.utf8)
        guard bytes.count >= 2, bytes.count <= 9, let unit = bytes.last else { return nil }
        var amount: Int64 = 0
        for b in bytes.dropLast() {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + Int64(b - UInt8(ascii: "0"))
        }
        switch unit {
        case UInt8(ascii: "H"): return .seconds(amount * 3600)
        case UInt8(ascii: "M"): return .seconds(amount * 60)
        case UInt8(ascii: "S"): return .seconds(amount)
        case UInt8(ascii: "m"): return .milliseconds(amount)
        case UInt8(ascii: "u"): return .microseconds(amount)
        case UInt8(ascii: "n"): return .nanoseconds(amount)
        default: return nil
        }
    }

    /// Formats a timeout for `grpc-timeout`, at most 8 digits, rounding up so the peer never
    /// sees a shorter deadline than ours.
    public static func formatTimeout(_ d: Duration) -> String {
        let (s, atto) = d.components
        let nanos = max(0, s) * 1_000_000_000 + max(0, atto) / 1_000_000_000
        let units: [(Int64, String)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (div, unit) in units {
            let v = (nanos + div - 1) / div
            if v < 100_000_000 { return "\(v)\(unit)" }
        }
        return "99999999H"
    }

    /// Percent-encodes a status message per the gRPC spec: bytes outside printable ASCII
    /// (0x20–0x7E) and `%` itself become `%XX` of the UTF-8 bytes.
    public static func percentEncode(_ message: String) -> String {
        var out = ""
        out.reserveCapacity(message.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in message.utf8 {
            if b >= 0x20, b <= 0x7E, b != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 0xF)]))
            }
        }
        return out
    }

    /// Decodes a percent-encoded `grpc-message`; malformed escapes are kept as-is, invalid
    /// UTF-8 is replaced (the spec asks receivers to be lenient).
    public static func percentDecode(_ value: String) -> String {
        let bytes = Array(value.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Frames one message: compressed flag 0, 4-byte big-endian length, the bytes.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        appendFrame(message, to: &out)
        return out
    }

    /// Appends one framed message to `out` (a stream's queue of response bytes): the only place
    /// the 5-byte message prefix is written.
    @inlinable
    public static func appendFrame(_ message: [UInt8], to out: inout [UInt8]) {
        out.reserveCapacity(out.count + message.count + 5)
        let n = UInt32(message.count)
        out.append(0)
        out.append(UInt8(n >> 24)); out.append(UInt8((n >> 16) & 0xFF))
        out.append(UInt8((n >> 8) & 0xFF)); out.append(UInt8(n & 0xFF))
        out.append(contentsOf: message)
    }
}

/// Reassembles length-prefixed gRPC messages from DATA chunks.
public struct GRPCDeframer: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        /// A message announced (or grew) beyond the limit.
        case tooLarge(announced: Int, limit: Int)
        /// The compressed flag was set; the caller decides whether it can decompress.
        case compressed
        /// The flag byte was neither 0 nor 1.
        case badFlag(UInt8)
    }

    /// May be lowered once the method is known (before any message arrived).
    public var limit: Int
    private var buffer: [UInt8] = []
    private var offset = 0

    public init(limit: Int) { self.limit = limit }

    /// Bytes received but not yet part of a complete message.
    public var pendingBytes: Int { buffer.count - offset }

    /// Appends bytes and returns every complete message now available.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [[UInt8]] {
        var messages: [[UInt8]] = []
        try append(bytes) { messages.append($0) }
        return messages
    }

    /// Appends bytes and hands over every complete message now available, in order, as it is
    /// cut (no array of them is built: a unary call's one message costs one allocation).
    public mutating func append(_ bytes: UnsafeRawBufferPointer, each deliver: ([UInt8]) -> Void) throws(Failure) {
        var bytes = bytes
        if buffer.count == offset {
            // Nothing pending (the usual case): whole messages are taken straight from `bytes`.
            while bytes.count >= 5 {
                let len = try Self.header(flag: bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], limit: limit)
                guard bytes.count - 5 >= len else { break }
                deliver(Array(bytes[5..<(5 + len)]))
                bytes = UnsafeRawBufferPointer(rebasing: bytes[(5 + len)...])
            }
            if bytes.isEmpty { return }
        }
        buffer.append(contentsOf: bytes)
        while buffer.count - offset >= 5 {
            let len = try Self.header(flag: buffer[offset], buffer[offset + 1], buffer[offset + 2], buffer[offset + 3],
                                      buffer[offset + 4], limit: limit)
            guard buffer.count - offset - 5 >= len else { break }
            deliver(Array(buffer[(offset + 5)..<(offset + 5 + len)]))
            offset += 5 + len
        }
        if offset > 0 && (offset == buffer.count || offset > 65_536) {
            buffer.removeFirst(offset)
            offset = 0
        }
    }

    /// The length announced by a 5-byte message header, checked against the limit and flags.
    @inline(__always)
    private static func header(flag: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, limit: Int) throws(Failure) -> Int {
        let len = Int(b1) << 24 | Int(b2) << 16 | Int(b3) << 8 | Int(b4)
        if len > limit { throw .tooLarge(announced: len, limit: limit) }
        if flag == 1 { throw .compressed }
        if flag != 0 { throw .badFlag(flag) }
        return len
    }
}
