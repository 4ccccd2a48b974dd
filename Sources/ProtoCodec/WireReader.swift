/// A minimal protobuf wire-format reader over a byte range: enough to find field boundaries
/// without decoding. Returns `nil` on malformed input (protobuf-c then reports the error).
/// Public for the few hand-coded messages on hot paths (plugin-runner frames).
public struct WireReader {
    public enum Payload: Sendable {
        case varint(UInt64)
        case fixed64
        case fixed32
        case lengthDelimited(Range<Int>)
    }

    public struct Field: Sendable {
        public let number: UInt32
        public let payload: Payload
    }

    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    public init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        let r = range ?? bytes.indices
        self.position = r.lowerBound
        self.end = r.upperBound
    }

    public var atEnd: Bool { position >= end }

    /// The next field, or `nil` at the end or on malformed data (including groups, unsupported).
    public mutating func next() -> Field? {
        guard !atEnd, let tag = varint(), tag >> 3 > 0, tag >> 3 <= UInt64(UInt32.max) else { return nil }
        let number = UInt32(tag >> 3)
        switch tag & 7 {
        case 0:
            guard let v = varint() else { return nil }
            return Field(number: number, payload: .varint(v))
        case 1:
            guard skip(8) else { return nil }
            return Field(number: number, payload: .fixed64)
        case 5:
            guard skip(4) else { return nil }
            return Field(number: number, payload: .fixed32)
        case 2:
            guard let len = varint(), len <= UInt64(end - position) else { return nil }
            let start = position
            position += Int(len)
            return Field(number: number, payload: .lengthDelimited(start..<position))
        default:
            return nil
        }
    }

    private mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while position < end, shift < 64 {
            let byte = bytes[position]
            position += 1
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    private mutating func skip(_ n: Int) -> Bool {
        guard end - position >= n else { return false }
        position += n
        return true
    }
}

/// The writing side for hand-coded messages, proto3 rules: a field at its default value (0,
/// empty) is not written unless `always`.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    private mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }

    public mutating func varint(_ field: Int, _ v: UInt64, always: Bool = false) {
        guard always || v != 0 else { return }
        raw(UInt64(field << 3))
        raw(v)
    }

    public mutating func bytes(_ field: Int, _ b: [UInt8], always: Bool = false) {
        guard always || !b.isEmpty else { return }
        raw(UInt64(field << 3 | 2))
        raw(UInt64(b.count))
        bytes.append(contentsOf: b)
    }
}
