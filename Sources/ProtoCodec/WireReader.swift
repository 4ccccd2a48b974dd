/// A minimal protobuf wire-format reader over a byte range: enough to find field boundaries
/// without decoding. Returns `nil` on malformed input (protobuf-c then reports the error).
struct WireReader {
    enum Payload {
        case varint(UInt64)
        case fixed64
        case fixed32
        case lengthDelimited(Range<Int>)
    }

    struct Field {
        let number: UInt32
        let payload: Payload
    }

    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        let r = range ?? bytes.indices
        self.position = r.lowerBound
        self.end = r.upperBound
    }

    var atEnd: Bool { position >= end }

    /// The next field, or `nil` at the end or on malformed data (including groups, unsupported).
    mutating func next() -> Field? {
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
