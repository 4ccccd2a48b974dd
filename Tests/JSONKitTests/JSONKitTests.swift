@testable import JSONKit
import Testing

@Suite struct JSONTests {
    @Test func parsesAndKeepsNumbersExact() throws {
        let j = try JSON.parse(#"{"a": 19.90, "b": [1, true, null, "x\u00e9\n"], "c": {"d": "1990"}}"#)
        #expect(j["a"]?.centsFromReais == 1990)
        #expect(j["b"]?[1]?.bool == true)
        #expect(j["b"]?[3]?.string == "xé\n")
        #expect(j["c"]?["d"]?.int64 == 1990)
        #expect(j["missing"] == nil)
    }

    @Test func rejectsMalformedInput() {
        for bad in ["", "{", "{\"a\":}", "[1,]", "01", "\"\\ud800\"", "{\"a\":1} x", "nul", "\"\u{1}\""] {
            #expect(throws: JSON.ParseError.self, "\(bad)") { try JSON.parse(bad) }
        }
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: JSON.ParseError.self) { try JSON.parse(deep) }
    }

    @Test func serializesDeterministically() throws {
        let j: JSON = .object(["b": .int(1), "a": .string("q\"\\\n"), "m": .reais(cents: 1990)])
        #expect(j.serialized == #"{"a":"q\"\\\n","b":1,"m":19.90}"#)
        #expect(try JSON.parse(j.bytes) == j)
    }

    /// Keys sort by their UTF-8 bytes: Swift's String order is canonical ("e\u{301}" is neither
    /// before nor after "é@"), so sorting by it could write the same object two ways (found by
    /// the json fuzz target).
    @Test func keysSortByTheirBytesSoSerializationIsStable() throws {
        let v = try JSON.parse(Array(#"{"a": 1, "a": 2, "+u0061": 3, "é@": 1, "e\u0301": 2}"#.utf8))
        let once = v.bytes
        #expect(try JSON.parse(once).bytes == once)
        #expect(String(decoding: once, as: UTF8.self) == "{\"+u0061\":3,\"a\":2,\"e\u{301}\":2,\"é@\":1}")
    }

    @Test func roundTripsAndEscapesForScriptBlocks() throws {
        let v: JSON = .object(["a": .array([.int(-12), .number("1.5"), .bool(true), .null]), "s": .string("</script>&\u{2028}\"\\\n😀")])
        let text = v.scriptSafeSerialized
        #expect(!text.contains("</script>") && text.contains("\\u003c/script\\u003e"))
        #expect(try JSON.parse(text) == v)
        #expect(try JSON.parse(#"{"x":"\ud83d\ude00","n":12345678901234}"#) == .object(["x": "😀", "n": .int(12_345_678_901_234)]))
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "\"\\ud800\"", "01x", "nul", "[1] 2", "\"\u{01}\""])
    func rejectsMalformed(_ text: String) {
        #expect(throws: JSON.ParseError.self) { try JSON.parse(text) }
    }

    @Test func nestingIsBounded() {
        #expect(throws: JSON.ParseError.self) { try JSON.parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100)) }
    }
}

@Suite struct Decimal2Tests {
    @Test func decimalsAreExact() {
        #expect(Decimal2.text(1990) == "19.90")
        #expect(Decimal2.text(5) == "0.05")
        #expect(Decimal2.cents("19.9") == 1990)
        #expect(Decimal2.cents("19.90") == 1990)
        #expect(Decimal2.cents("19") == 1900)
        #expect(Decimal2.cents("0.1") == 10)
        #expect(Decimal2.cents("19.999") == nil)
        #expect(Decimal2.cents("1e3") == nil)
        #expect(Decimal2.cents("abc") == nil)
        #expect(Decimal2.cents("19.900") == 1990)
    }

    /// The byte-wise string writer against a scalar-by-scalar reference, on strings built from
    /// the characters that matter (controls, quotes, script breakers, U+2028/9, multi-byte
    /// text, bytes next to them): both forms, every string the same.
    @Test func stringsAreWrittenAsTheScalarReferenceWritesThem() throws {
        let pieces: [String] = ["a", "Z", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "<", ">", "&", "/",
                                "\u{2028}", "\u{2029}", "\u{2027}", "\u{202a}", "\u{e2}", "é", "€", "☃", "😀", "ção", " "]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<3_000 {
            let count = round < pieces.count ? 1 : Int.random(in: 0...24, using: &generator)
            let text = round < pieces.count ? pieces[round] : (0..<count).map { _ in pieces.randomElement(using: &generator)! }.joined()
            let value = JSON.object(["k" + text: .string(text)])
            #expect(value.bytes == Self.reference(value, scriptSafe: false), "\(Array(text.unicodeScalars))")
            #expect(Array(value.scriptSafeSerialized.utf8) == Self.reference(value, scriptSafe: true), "\(Array(text.unicodeScalars))")
            #expect(try JSON.parse(value.bytes) == value, "round trip")
        }
    }

    /// The eight-bytes-at-once test agrees with looking at each byte, for a clean word with one
    /// byte of every value at every position.
    @Test func cleanWordsAreExactlyTheWordsWithNothingToEscape() {
        let clean = Array("abcdefgh".utf8)
        for scriptSafe in [false, true] {
            for position in 0..<8 {
                for value in 0...255 {
                    var word = clean
                    word[position] = UInt8(value)
                    let w = word.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                    let b = UInt8(value)
                    let needsLook = b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\")
                        || scriptSafe && (b == UInt8(ascii: "<") || b == UInt8(ascii: ">") || b == UInt8(ascii: "&") || b == 0xE2)
                    #expect(JSON.cleanWord(w, scriptSafe: scriptSafe) == !needsLook, "byte \(value) at \(position), scriptSafe \(scriptSafe)")
                }
            }
        }
    }

    /// The writer as it was, scalar by scalar: the reference for the test above.
    static func reference(_ value: JSON, scriptSafe: Bool) -> [UInt8] {
        guard case .object(let o) = value, o.count == 1, let (k, v) = o.first, case .string(let s) = v else { return [] }
        func string(_ s: String) -> [UInt8] {
            let hex = Array("0123456789abcdef".utf8)
            var out: [UInt8] = [UInt8(ascii: "\"")]
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += Array("\\\"".utf8)
                case "\\": out += Array("\\\\".utf8)
                case "\n": out += Array("\\n".utf8)
                case "\r": out += Array("\\r".utf8)
                case "\t": out += Array("\\t".utf8)
                case _ where scalar.value < 0x20
                    || scriptSafe && (scalar == "<" || scalar == ">" || scalar == "&" || scalar.value == 0x2028 || scalar.value == 0x2029):
                    let v = Int(scalar.value)
                    out += Array("\\u".utf8) + [hex[(v >> 12) & 0xF], hex[(v >> 8) & 0xF], hex[(v >> 4) & 0xF], hex[v & 0xF]]
                default:
                    UTF8.encode(scalar) { out.append($0) }
                }
            }
            return out + [UInt8(ascii: "\"")]
        }
        return [UInt8(ascii: "{")] + string(k) + [UInt8(ascii: ":")] + string(s) + [UInt8(ascii: "}")]
    }
}

@Suite struct JSONObjectWriterTests {
    @Test func writesWhatTheGenericWriterWrites() {
        var w = JSONObjectWriter(capacity: 8)
        w.int("a", -12)
        w.nonEmpty("b", "")
        w.string("c", "q\"\\\u{0}\u{7f}é\u{2028}")
        w.nonEmpty("d", "x")
        let expected = JSON.object(["a": .int(-12), "c": .string("q\"\\\u{0}\u{7f}é\u{2028}"), "d": .string("x")]).bytes
        #expect(w.finish() == expected)
        #expect(JSONObjectWriter().finish() == Array("{}".utf8))
    }
}
