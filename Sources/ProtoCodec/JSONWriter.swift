/// Renders a `JSONValue` as UTF-8: compact (no whitespace at all) or pretty (two-space
/// indentation, `"key": value`, one member or element per line, a trailing newline).
struct JSONWriter {
    private var out: [UInt8] = []
    private let pretty: Bool

    private init(pretty: Bool) { self.pretty = pretty }

    static func render(_ value: JSONValue, pretty: Bool) -> [UInt8] {
        var writer = JSONWriter(pretty: pretty)
        writer.write(value, indent: 0)
        if pretty { writer.out.append(0x0a) }
        return writer.out
    }

    /// `s` as a JSON string literal, quotes included.
    static func quoted(_ s: String) -> String {
        var bytes: [UInt8] = []
        appendQuoted(s, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func write(_ value: JSONValue, indent: Int) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let text): out.append(contentsOf: text.utf8)
        case .string(let s): Self.appendQuoted(s, to: &out)
        case .array(let items):
            container(open: "[", close: "]", count: items.count, indent: indent) { writer, i in
                writer.write(items[i], indent: indent + 1)
            }
        case .object(let members):
            container(open: "{", close: "}", count: members.count, indent: indent) { writer, i in
                Self.appendQuoted(members[i].key, to: &writer.out)
                writer.out.append(UInt8(ascii: ":"))
                if writer.pretty { writer.out.append(UInt8(ascii: " ")) }
                writer.write(members[i].value, indent: indent + 1)
            }
        }
    }

    private mutating func container(open: Unicode.Scalar, close: Unicode.Scalar, count: Int, indent: Int,
                                    element: (inout JSONWriter, Int) -> Void) {
        out.append(UInt8(ascii: open))
        for i in 0..<count {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            newline(indent + 1)
            element(&self, i)
        }
        if count > 0 { newline(indent) }
        out.append(UInt8(ascii: close))
    }

    private mutating func newline(_ indent: Int) {
        guard pretty else { return }
        out.append(0x0a)
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * indent))
    }

    private static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5c, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5c, 0x5c])
            case 0x08: out.append(contentsOf: [0x5c, UInt8(ascii: "b")])
            case 0x0c: out.append(contentsOf: [0x5c, UInt8(ascii: "f")])
            case 0x0a: out.append(contentsOf: [0x5c, UInt8(ascii: "n")])
            case 0x0d: out.append(contentsOf: [0x5c, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5c, UInt8(ascii: "t")])
            case 0..<0x20: out.append(contentsOf: Array("\\u00".utf8) + [hex[Int(b >> 4)], hex[Int(b & 0xf)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
