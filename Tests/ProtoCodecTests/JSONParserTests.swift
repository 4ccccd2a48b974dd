import Testing
@testable import ProtoCodec

private func parse(_ bytes: [UInt8]) throws -> JSONValue { try JSONParser.parse(bytes) }
private func parse(_ text: String) throws -> JSONValue { try JSONParser.parse(Array(text.utf8)) }

/// The syntax error for `bytes`, or `nil` when they parse.
private func syntaxError(_ bytes: [UInt8]) -> String? {
    do {
        _ = try JSONParser.parse(bytes)
        return nil
    } catch let e as ProtoCodecError {
        return e.message
    } catch {
        return "unexpected error \(error)"
    }
}

private func syntaxError(_ text: String) -> String? { syntaxError(Array(text.utf8)) }

@Suite struct JSONParserTests {
    @Test func parsesEveryValueKind() throws {
        #expect(try parse(" {\"a\" : [1, -2.5e+3, true, false, null, \"x\", {}, []]}\n\t\r") == .object([
            JSONMember("a", .array([.number("1"), .number("-2.5e+3"), .bool(true), .bool(false), .null,
                                    .string("x"), .object([]), .array([])])),
        ]))
        #expect(try parse("0") == .number("0"))
        #expect(try parse("-0.0E-0") == .number("-0.0E-0"))
        #expect(try parse("\"\"") == .string(""))
    }

    @Test func decodesEscapesAndUTF8() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t\u0041\u00e9\u4e16""#) == .string("\"\\/\u{8}\u{c}\n\r\tAé世"))
        #expect(try parse(#""\ud83d\ude80 \uD83D\uDE80""#) == .string("🚀 🚀"))
        #expect(try parse("\"olá 世界 🚀\"") == .string("olá 世界 🚀"))
        // Keys are compared by their bytes: canonically equivalent spellings are different keys.
        #expect(try parse("{\"\u{e9}\":1,\"e\u{301}\":2}") == .object([JSONMember("\u{e9}", .number("1")),
                                                                         JSONMember("e\u{301}", .number("2"))]))
    }

    @Test(arguments: [
        ("", "invalid JSON at byte 0: unexpected end of input, expected a value"),
        ("   ", "invalid JSON at byte 3: unexpected end of input, expected a value"),
        (#"{"a":1 "b":2}"#, "invalid JSON at byte 7: expected ',' or '}'"),
        (#"{"amountCents": 12,}"#, "invalid JSON at byte 19: expected a string key"),
        ("[1,2", "invalid JSON at byte 4: expected ',' or ']'"),
        ("[1 2]", "invalid JSON at byte 3: expected ',' or ']'"),
        ("[1,]", "invalid JSON at byte 3: unexpected ']', expected a value"),
        ("{a:1}", "invalid JSON at byte 1: expected a string key or '}'"),
        (#"{"a" 1}"#, "invalid JSON at byte 5: expected ':'"),
        ("{} {}", "invalid JSON at byte 3: unexpected data after the JSON value"),
        ("tru", "invalid JSON at byte 0: invalid literal, expected true"),
        ("nul", "invalid JSON at byte 0: invalid literal, expected null"),
        ("NaN", "invalid JSON at byte 0: unexpected 'N', expected a value"),
        ("+1", "invalid JSON at byte 0: unexpected '+', expected a value"),
        ("01", "invalid JSON at byte 1: unexpected data after the JSON value"),
        ("1.", "invalid JSON at byte 0: invalid number"),
        ("-", "invalid JSON at byte 0: invalid number"),
        (".5", "invalid JSON at byte 0: unexpected '.', expected a value"),
        ("1e", "invalid JSON at byte 0: invalid number"),
        ("\"abc", "invalid JSON at byte 4: unterminated string"),
        ("\"a\tb\"", "invalid JSON at byte 2: unescaped control character (byte 0x09) in a string"),
        (#""\x""#, "invalid JSON at byte 1: invalid escape sequence"),
        (#""\u12g4""#, "invalid JSON at byte 1: invalid \u{5c}u escape"),
        (#""\ud83d""#, "invalid JSON at byte 1: unpaired surrogate in \u{5c}u escape"),
        (#""\ud83dx""#, "invalid JSON at byte 1: unpaired surrogate in \u{5c}u escape"),
        (#""\ude80""#, "invalid JSON at byte 1: unpaired surrogate in \u{5c}u escape"),
        (#""\ud83d\u0041""#, "invalid JSON at byte 1: unpaired surrogate in \u{5c}u escape"),
        ("// c\n{}", "invalid JSON at byte 0: unexpected '/', expected a value"),
        ("{'a':1}", "invalid JSON at byte 1: expected a string key or '}'"),
    ])
    func rejectsInvalidSyntaxWithTheOffset(input: String, message: String) {
        #expect(syntaxError(input) == message)
    }

    @Test func rejectsInvalidUTF8() {
        let cases: [[UInt8]] = [
            [0x22, 0xff, 0x22],              // never valid
            [0x22, 0xc3, 0x28, 0x22],        // bad continuation
            [0x22, 0xc0, 0xaf, 0x22],        // overlong "/"
            [0x22, 0xe0, 0x80, 0xaf, 0x22],  // overlong, three bytes
            [0x22, 0xed, 0xa0, 0x80, 0x22],  // UTF-8-encoded surrogate U+D800
            [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
            [0x22, 0xe4, 0xb8, 0x22],        // truncated
        ]
        for bytes in cases {
            #expect(syntaxError(bytes) == "invalid JSON at byte 1: invalid UTF-8", "\(bytes)")
        }
        #expect(syntaxError([0xef, 0xbb, 0xbf, 0x7b, 0x7d]) == "invalid JSON at byte 0: unexpected byte 0xef, expected a value")
        #expect(syntaxError([0x7b, 0x7d, 0x00]) == "invalid JSON at byte 2: unexpected data after the JSON value")
        #expect(syntaxError([0x22, 0xf0, 0x9f, 0x9a, 0x80, 0x22]) == nil)
    }

    @Test func limitsNestingDepth() throws {
        let limit = JSONParser.maxDepth
        let fine = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(syntaxError(fine) == nil)
        let deep = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect(syntaxError(deep) == "invalid JSON at byte 64: nesting deeper than 64 levels")
        // A hostile document far deeper than the stack could take fails the same way.
        #expect(syntaxError(String(repeating: "{\"a\":", count: 100_000)) == "invalid JSON at byte 320: nesting deeper than 64 levels")

        // Through ProtoJSON: recursive messages hit the same limit with a clear message.
        func nested(_ depth: Int) -> String {
            String(repeating: #"{"fChild":"#, count: depth) + "{}" + String(repeating: "}", count: depth)
        }
        #expect(try ProtoJSON.decode(Array(nested(limit - 1).utf8), as: "pixtrack.testing.v1.AllKinds").message("f_child") != nil)
        #expect(jsonError(nested(limit))?.hasSuffix("nesting deeper than 64 levels") == true)
    }

    /// Mutations of a valid document: decoding throws a ProtoCodecError or yields a message that
    /// encodes (to JSON and to the wire) and re-decodes to the same JSON; it never crashes.
    @Test func mutatedDocumentsNeverCrash() throws {
        var state: UInt64 = 0x5eed_1234
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let seed = Array(allKindsOutput.utf8)
        let interesting = Array(#"{}[]",:-0123456789eE.\u"tfn "#.utf8) + [0x00, 0x80, 0xc3, 0xed, 0xff]
        var decoded = 0
        for _ in 0..<3_000 {
            var doc = seed
            for _ in 0...next(3) {
                let i = next(doc.count)
                switch next(3) {
                case 0: doc[i] = interesting[next(interesting.count)]
                case 1: doc.insert(interesting[next(interesting.count)], at: i)
                default: doc.remove(at: i)
                }
            }
            guard let m = try? ProtoJSON.decode(doc, as: "pixtrack.testing.v1.AllKinds") else { continue }
            decoded += 1
            let json = try ProtoJSON.encode(m)
            #expect(try ProtoJSON.encode(ProtoJSON.decode(json, as: m.typeName)) == json)
            #expect(try ProtoJSON.encode(ProtoCodec.decode(ProtoCodec.encode(m), as: m.typeName)) == json)
        }
        #expect(decoded > 100)
    }

    @Test func exactIntegerReading() {
        #expect(JSONNumber.integer("18446744073709551615") == .value(negative: false, magnitude: .max))
        #expect(JSONNumber.integer("-9223372036854775808") == .value(negative: true, magnitude: 1 << 63))
        #expect(JSONNumber.integer("1.50e1") == .value(negative: false, magnitude: 15))
        #expect(JSONNumber.integer("0e999999999999") == .value(negative: false, magnitude: 0))
        #expect(JSONNumber.integer("1e999999999999") == .tooLarge)
        #expect(JSONNumber.integer("1e-999999999999") == .fraction)
        #expect(JSONNumber.integer("18446744073709551616") == .tooLarge)
        #expect(JSONNumber.integer("100e-2") == .value(negative: false, magnitude: 1))
        #expect(JSONNumber.integer("101e-2") == .fraction)
        #expect(JSONNumber.integer("1e2", plain: true) == .malformed)
        #expect(JSONNumber.integer("+1") == .malformed)
        #expect(JSONNumber.integer("") == .malformed)
    }
}
