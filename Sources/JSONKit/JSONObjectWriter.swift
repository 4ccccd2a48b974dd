/// Writes one flat JSON object straight to bytes, for hot paths that know their keys (a click's
/// Redis value): no dictionary, no hashing, no sort. The output is byte for byte what
/// `JSON.object(…).bytes` writes, provided the keys come in UTF-8 byte order, which debug builds
/// check at each key.
public struct JSONObjectWriter {
    private var out: [UInt8]
    private var first = true
    #if DEBUG
    private var lastKey: [UInt8] = []
    #endif

    public init(capacity: Int = 256) {
        out = []
        out.reserveCapacity(capacity)
        out.append(UInt8(ascii: "{"))
    }

    /// `"key":"value"`.
    public mutating func string(_ key: StaticString, _ value: String) {
        self.key(key)
        JSON.writeString(value, to: &out, scriptSafe: false)
    }

    /// `"key":"value"`, left out when `value` is empty.
    public mutating func nonEmpty(_ key: StaticString, _ value: String) {
        if !value.isEmpty { string(key, value) }
    }

    /// `"key":123`.
    public mutating func int(_ key: StaticString, _ value: Int64) {
        self.key(key)
        out.append(contentsOf: String(value).utf8)
    }

    /// `"key":{…}`: the nested object's members are written by `body` (same key-order rule).
    public mutating func object(_ key: StaticString, _ body: (inout JSONObjectWriter) -> Void) {
        self.key(key)
        var buffer: [UInt8] = []
        swap(&buffer, &out)
        var inner = JSONObjectWriter(continuing: buffer)
        body(&inner)
        out = inner.finish()
    }

    private init(continuing buffer: consuming [UInt8]) {
        out = buffer
        out.append(UInt8(ascii: "{"))
    }

    /// The object's bytes (the writer is done).
    public consuming func finish() -> [UInt8] {
        out.append(UInt8(ascii: "}"))
        return out
    }

    private mutating func key(_ key: StaticString) {
        let bytes = UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        #if DEBUG
        assert(first || lastKey.lexicographicallyPrecedes(bytes), "JSONObjectWriter keys must come in UTF-8 byte order (\(key))")
        assert(bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") },
               "JSONObjectWriter keys are plain ASCII")
        lastKey = Array(bytes)
        #endif
        if !first { out.append(UInt8(ascii: ",")) }
        first = false
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: bytes)
        out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
    }
}
