import Testing
@testable import ProtoCodec

private let allKinds = "pixtrack.testing.v1.AllKinds"

private func decode(_ json: String, as type: String = allKinds) throws -> ProtoMessage {
    try ProtoJSON.decode(Array(json.utf8), as: type)
}

private func encode(_ message: ProtoMessage, pretty: Bool = false) throws -> String {
    String(decoding: try ProtoJSON.encode(message, pretty: pretty), as: UTF8.self)
}

/// JSON → message → JSON, compact.
private func canonical(_ json: String, as type: String = allKinds) throws -> String {
    try encode(try decode(json, as: type))
}

/// The error message `ProtoJSON.decode` throws for `json`, or `nil` if it succeeds.
func jsonError(_ json: String, as type: String = allKinds) -> String? {
    do {
        _ = try ProtoJSON.decode(Array(json.utf8), as: type)
        return nil
    } catch let e as ProtoCodecError {
        return e.message
    } catch {
        return "unexpected error \(error)"
    }
}

/// Every field kind, written with some of the accepted variants (proto names, numbers as
/// strings and strings as numbers, enum numbers, unpadded base64).
private let allKindsInput = #"""
{
  "fInt32": -42, "f_int64": "-9223372036854775808", "fUint32": 4294967295,
  "fUint64": "18446744073709551615", "fSint32": "-7", "fSint64": -9000000000,
  "fFixed32": 3735928559, "fFixed64": "81985529216486895", "fSfixed32": -1,
  "fSfixed64": 9223372036854775807, "fFloat": 1.5, "fDouble": -2.25, "fBool": true,
  "fString": "olá, 世界 \ud83d\ude80 \"q\" \\ \n", "fBytes": "AAEC/w==", "fEnum": "COLOR_BLUE",
  "fMessage": {"name": "in", "number": 3},
  "f_child": {"fString": "child", "fChild": {"fInt32": 1}},
  "rInt32": [1, -2, 300], "rSint64": ["-1", 1], "rFixed32": [7], "rDouble": [0.5, -0.0, 1e-7],
  "rBool": [true, false], "rString": ["a", "", "c"], "rBytes": ["", "CQ"],
  "rEnum": ["COLOR_RED", 0, 99], "rMessage": [{"name": "x", "number": 1}, {}],
  "rUint64": [0, "18446744073709551615"], "rFloat": [3.25],
  "mString": {"k1": "v1", "k2": "v2"}, "m_message": {"5": {"name": "five", "number": 5}, "-1": {}},
  "oMessage": {"name": "chosen", "number": 8}
}
"""#

/// The canonical compact rendering of `allKindsInput` (also the seed of the JSON fuzz test).
let allKindsOutput = #"{"fInt32":-42,"fInt64":"-9223372036854775808","fUint32":4294967295,"#
    + #""fUint64":"18446744073709551615","fSint32":-7,"fSint64":"-9000000000","fFixed32":3735928559,"#
    + #""fFixed64":"81985529216486895","fSfixed32":-1,"fSfixed64":"9223372036854775807","fFloat":1.5,"#
    + #""fDouble":-2.25,"fBool":true,"fString":"olá, 世界 🚀 \"q\" \\ \n","fBytes":"AAEC/w==","#
    + #""fEnum":"COLOR_BLUE","fMessage":{"name":"in","number":3},"#
    + #""fChild":{"fString":"child","fChild":{"fInt32":1}},"rInt32":[1,-2,300],"rSint64":["-1","1"],"#
    + #""rFixed32":[7],"rDouble":[0.5,-0,1e-07],"rBool":[true,false],"rString":["a","","c"],"#
    + #""rBytes":["","CQ=="],"rEnum":["COLOR_RED","COLOR_UNSPECIFIED",99],"#
    + #""rMessage":[{"name":"x","number":1},{}],"rUint64":["0","18446744073709551615"],"rFloat":[3.25],"#
    + #""mString":{"k1":"v1","k2":"v2"},"mMessage":{"5":{"name":"five","number":5},"-1":{}},"#
    + #""oMessage":{"name":"chosen","number":8}}"#

@Suite struct ProtoJSONTests {
    @Test func roundTripsEveryFieldKindThroughTheWireFormat() throws {
        let fromJSON = try decode(allKindsInput)
        let fromWire = try ProtoCodec.decode(try ProtoCodec.encode(fromJSON), as: allKinds)
        #expect(fromWire == fromJSON)
        #expect(try encode(fromWire) == allKindsOutput)
        #expect(try canonical(allKindsOutput) == allKindsOutput)
        #expect(fromJSON.int64("f_int64") == .min && fromJSON.uint64("f_uint64") == .max)
        #expect(fromJSON.int64("f_sfixed64") == .max && fromJSON.uint64("f_fixed64") == 0x0123_4567_89ab_cdef)
        #expect(fromJSON.bytes("f_bytes") == [0, 1, 2, 255])
        #expect(fromJSON.stringMap("m_string") == ["k1": "v1", "k2": "v2"])
    }

    @Test func sixtyFourBitIntegersAreExact() throws {
        for (json, expected) in [
            (#"{"fInt64":"9223372036854775807"}"#, #"{"fInt64":"9223372036854775807"}"#),
            (#"{"fInt64":-9223372036854775808}"#, #"{"fInt64":"-9223372036854775808"}"#),
            (#"{"fUint64":18446744073709551615}"#, #"{"fUint64":"18446744073709551615"}"#),
            (#"{"fSint64":"9007199254740993"}"#, #"{"fSint64":"9007199254740993"}"#),  // 2^53 + 1
            (#"{"fFixed64":"1e3","fInt64":12.0,"fSfixed64":"-0"}"#, #"{"fInt64":"12","fFixed64":"1000"}"#),
            (#"{"fUint64":"0.18446744073709551615e20"}"#, #"{"fUint64":"18446744073709551615"}"#),
        ] {
            #expect(try canonical(json) == expected, "\(json)")
        }
        for json in [#"{"fInt64":"9223372036854775808"}"#, #"{"fInt64":-9223372036854775809}"#,
                     #"{"fUint64":"18446744073709551616"}"#, #"{"fUint64":"-1"}"#, #"{"fInt64":"1e19"}"#] {
            #expect(jsonError(json)?.contains("is out of range for") == true, "\(json)")
        }
        for json in [#"{"fInt64":"+1"}"#, #"{"fInt64":"1.5"}"#, #"{"fInt64":0.5}"#, #"{"fInt64":" 1"}"#,
                     #"{"fInt64":"01"}"#, #"{"fInt64":""}"#, #"{"fUint64":"0x10"}"#, #"{"fInt64":true}"#] {
            #expect(jsonError(json)?.contains("expected an integer") == true, "\(json)")
        }
    }

    @Test func thirtyTwoBitIntegers() throws {
        #expect(try canonical(#"{"fInt32":"12","fUint32":1e2,"fSint32":-1.0,"fFixed32":4294967295}"#)
            == #"{"fInt32":12,"fUint32":100,"fSint32":-1,"fFixed32":4294967295}"#)
        #expect(try canonical(#"{"fInt32":-2147483648,"fSfixed32":2147483647}"#)
            == #"{"fInt32":-2147483648,"fSfixed32":2147483647}"#)
        #expect(jsonError(#"{"fInt32":1.5}"#) == #"field "fInt32": expected an integer, got 1.5"#)
        #expect(jsonError(#"{"fInt32":2147483648}"#) == #"field "fInt32": 2147483648 is out of range for int32"#)
        #expect(jsonError(#"{"fUint32":-1}"#) == #"field "fUint32": -1 is out of range for uint32"#)
        #expect(jsonError(#"{"fFixed32":"4294967296"}"#) == #"field "fFixed32": "4294967296" is out of range for uint32"#)
    }

    @Test func floatingPoint() throws {
        #expect(try canonical(#"{"rDouble":["NaN","Infinity","-Infinity",1e300,"2.5",100],"rFloat":[0.1,"-Infinity",1e10]}"#)
            == #"{"rDouble":["NaN","Infinity","-Infinity",1e+300,2.5,100],"rFloat":[0.1,"-Infinity",10000000000]}"#)
        // -0.0 is a default, as protobuf-c decides (it never writes one): left out, so the message
        // survives the wire (found by scripts/fuzz, proto-json). In a list it stays -0.
        #expect(try canonical(#"{"fFloat":-0,"fDouble":-0.0,"rDouble":[-0.0]}"#) == #"{"rDouble":[-0]}"#)
        let negativeZero = try decode(#"{"fDouble":-0.0,"rDouble":[-0.0]}"#)
        #expect(try ProtoCodec.decode(ProtoCodec.encode(negativeZero), as: allKinds) == negativeZero)
        #expect(jsonError(#"{"fFloat":1e39}"#) == #"field "fFloat": 1e39 is out of range for float"#)
        #expect(jsonError(#"{"fDouble":1e400}"#) == #"field "fDouble": 1e400 is out of range for double"#)
        #expect(jsonError(#"{"fDouble":"nan"}"#) == #"field "fDouble": expected a number, got "nan""#)
        #expect(jsonError(#"{"fDouble":true}"#) == #"field "fDouble": expected a number, got true"#)
    }

    @Test func boolsStringsAndNull() throws {
        #expect(jsonError(#"{"fBool":"true"}"#) == #"field "fBool": expected true or false, got "true""#)
        #expect(jsonError(#"{"fBool":1}"#) == #"field "fBool": expected true or false, got 1"#)
        #expect(jsonError(#"{"fString":5}"#) == #"field "fString": expected a string, got 5"#)
        #expect(jsonError(#"{"fString":"a\u0000b"}"#)?.contains("U+0000") == true)
        // null means unset, for every kind; null inside a list or as a map value does not.
        #expect(try canonical(#"{"fInt32":null,"fMessage":null,"rInt32":null,"mString":null,"oString":null,"fString":"x"}"#)
            == #"{"fString":"x"}"#)
        #expect(jsonError(#"{"rInt32":[1,null]}"#) == #"field "rInt32[1]": null is not allowed in a repeated field"#)
        #expect(jsonError(#"{"mString":{"a":null}}"#) == #"field "mString[a]": null is not allowed as a map value"#)
    }

    @Test func bytesAcceptBase64Variants() throws {
        // 0xfb 0xff 0xbf: "+/+/" in the standard alphabet, "-_-_" URL-safe.
        for text in ["+/+/", "-_-_", "+_-/"] {
            #expect(try decode(#"{"fBytes":"\#(text)"}"#).bytes("f_bytes") == [0xfb, 0xff, 0xbf], "\(text)")
        }
        for (text, bytes) in [("YQ==", [0x61]), ("YQ", [0x61]), ("YWI=", [0x61, 0x62]), ("YWI", [0x61, 0x62]),
                              ("YWJj", [0x61, 0x62, 0x63]), ("", [])] as [(String, [UInt8])] {
            #expect(try decode(#"{"rBytes":["\#(text)"]}"#).list("r_bytes") == [.bytes(bytes)], "\(text)")
        }
        #expect(try encode(ProtoMessage(allKinds, ["f_bytes": .bytes([0xfb, 0xff, 0xbf, 0x61])])) == #"{"fBytes":"+/+/YQ=="}"#)
        for text in ["Y", "YQ=", "Y===", "YQ==YQ==", "YQ%=", "Y Q=", "YWJ\\n"] {
            #expect(jsonError(#"{"fBytes":"\#(text)"}"#)?.contains("expected base64") == true, "\(text)")
        }
    }

    @Test func enumsByNameAndNumber() throws {
        #expect(try decode(#"{"fEnum":"COLOR_RED"}"#).enumValue("f_enum") == 1)
        #expect(try decode(#"{"fEnum":2}"#).enumValue("f_enum") == 2)
        #expect(try canonical(#"{"fEnum":"COLOR_UNSPECIFIED"}"#) == "{}")
        #expect(try canonical(#"{"fEnum":7,"rEnum":[2,"COLOR_RED",-3]}"#) == #"{"fEnum":7,"rEnum":["COLOR_BLUE","COLOR_RED",-3]}"#)
        #expect(jsonError(#"{"fEnum":"COLOR_GREEN"}"#)
            == #"field "fEnum": unknown value "COLOR_GREEN" for enum pixtrack.testing.v1.AllKinds.Color"#)
        #expect(jsonError(#"{"fEnum":"color_red"}"#)?.contains("unknown value") == true)
        #expect(jsonError(#"{"fEnum":1.5}"#) == #"field "fEnum": expected an enum name or integer, got 1.5"#)
        #expect(jsonError(#"{"fEnum":4294967296}"#) == #"field "fEnum": 4294967296 is out of range for an enum"#)
    }

    @Test func maps() throws {
        let m = try decode(#"{"mMessage":{"-7":{"number":1},"0":{"name":"zero"},"2147483647":{}},"mString":{"":"","é":"ü"}}"#)
        let keys = m.list("m_message").compactMap { if case .message(let e) = $0 { e.int32("key") } else { nil } }
        #expect(keys == [-7, 0, 2_147_483_647])
        #expect(m.stringMap("m_string") == ["": "", "é": "ü"])
        #expect(try encode(m) == #"{"mString":{"":"","é":"ü"},"mMessage":{"-7":{"number":1},"0":{"name":"zero"},"2147483647":{}}}"#)
        #expect(try ProtoCodec.decode(try ProtoCodec.encode(m), as: allKinds) == m)
        for key in ["x", "1.0", "1e2", "+1", "01", "2147483648", " 1"] {
            #expect(jsonError(#"{"mMessage":{"\#(key)":{}}}"#) == #"field "mMessage[\#(key)]": map key is not a valid int32"#)
        }
        #expect(jsonError(#"{"mMessage":{"0":{},"-0":{}}}"#) == #"field "mMessage[-0]": duplicate map key"#)
        #expect(jsonError(#"{"mString":["a"]}"#) == #"field "mString": expected an object (a map), got an array"#)
        #expect(jsonError(#"{"mString":{"a":1}}"#) == #"field "mString[a]": expected a string, got 1"#)
        // Keys are bytes: canonically equivalent spellings stay two keys.
        let nfcNfd = "{\"mString\":{\"\u{e9}\":\"1\",\"e\u{301}\":\"2\"}}"
        #expect(try canonical(nfcNfd) == nfcNfd)
        // An entry whose key and value are both unset still renders, with the defaults.
        let entry = ProtoMessage("\(allKinds).MMessageEntry")
        #expect(try encode(ProtoMessage(allKinds, ["m_message": .list([.message(entry)])])) == #"{"mMessage":{"0":{}}}"#)
    }

    @Test func oneofAllowsAtMostOneMember() throws {
        #expect(try canonical(#"{"oInt64":"0"}"#) == #"{"oInt64":"0"}"#)  // set at its default: still set
        #expect(try canonical(#"{"oString":null,"oInt64":5}"#) == #"{"oInt64":"5"}"#)
        #expect(jsonError(#"{"oString":"a","oInt64":1}"#)
            == #"field "oInt64": oneof "choice" of pixtrack.testing.v1.AllKinds already has "oString"; set at most one"#)
        #expect(jsonError(#"{"id":"1","reference":"PAY-1"}"#, as: "pixtrack.v1.GetPaymentRequest")
            == #"field "reference": oneof "key" of pixtrack.v1.GetPaymentRequest already has "id"; set at most one"#)
        let both = ProtoMessage(allKinds, ["o_string": .string("a"), "o_int64": .int64(1)])
        #expect(throws: ProtoCodecError.self) { try ProtoJSON.encode(both) }
    }

    @Test func unknownAndDuplicateFieldsAreRejected() {
        #expect(jsonError(#"{"foo":1}"#, as: "pixtrack.v1.GetPaymentRequest")
            == #"unknown field "foo" in pixtrack.v1.GetPaymentRequest"#)
        #expect(jsonError(#"{"fMessage":{"nom":"x"}}"#)
            == #"unknown field "nom" in pixtrack.testing.v1.AllKinds.Inner at "fMessage""#)
        #expect(jsonError(#"{"FInt32":1}"#) == #"unknown field "FInt32" in pixtrack.testing.v1.AllKinds"#)
        #expect(jsonError(#"{"fInt32":1,"f_int32":2}"#) == #"field "f_int32": the same field as "fInt32"; give it once"#)
        #expect(jsonError(#"{"fInt32":1,"fInt32":2}"#) == #"invalid JSON at byte 12: duplicate key "fInt32""#)
    }

    @Test func wrongTypesNameTheFieldPath() {
        #expect(jsonError(#"{"amountCents":"abc"}"#, as: "pixtrack.v1.GeneratePixRequest")
            == #"field "amountCents": expected an integer, got "abc""#)
        #expect(jsonError(#"{"fChild":{"fChild":{"f_message":{"number":"x"}}}}"#)
            == #"field "fChild.fChild.f_message.number": expected an integer, got "x""#)
        #expect(jsonError(#"{"rMessage":[{},{"name":[]}]}"#) == #"field "rMessage[1].name": expected a string, got an array"#)
        #expect(jsonError(#"{"mMessage":{"5":{"number":true}}}"#) == #"field "mMessage[5].number": expected an integer, got true"#)
        #expect(jsonError(#"{"fMessage":"x"}"#)
            == #"field "fMessage": expected a JSON object for pixtrack.testing.v1.AllKinds.Inner, got "x""#)
        #expect(jsonError(#"{"rInt32":1}"#) == #"field "rInt32": expected an array, got 1"#)
        #expect(jsonError("[]") == "expected a JSON object for pixtrack.testing.v1.AllKinds, got an array")
        #expect(jsonError("{}", as: "no.such.Type") == "unknown message type 'no.such.Type'")
    }

    @Test func prettyAndCompactOutput() throws {
        let m = ProtoMessage("pixtrack.testing.v1.EchoRequest", [
            "text": .string("hi"), "payload": .bytes([1, 2]), "fail_code": .int32(0),
        ])
        #expect(try encode(m) == #"{"text":"hi","payload":"AQI="}"#)
        #expect(try encode(m, pretty: true) == "{\n  \"text\": \"hi\",\n  \"payload\": \"AQI=\"\n}\n")
        let nested = try decode(#"{"rInt32":[1,2],"fMessage":{},"mString":{"a":"b"}}"#)
        #expect(try encode(nested, pretty: true) == """
            {
              "fMessage": {},
              "rInt32": [
                1,
                2
              ],
              "mString": {
                "a": "b"
              }
            }

            """)
        #expect(try encode(ProtoMessage(allKinds)) == "{}")
        #expect(try encode(ProtoMessage(allKinds), pretty: true) == "{}\n")
    }

    @Test func omitsDefaultsButKeepsExplicitPresence() throws {
        let zeros = ProtoMessage(allKinds, [
            "f_int32": .int32(0), "f_int64": .int64(0), "f_float": .float(0), "f_bool": .bool(false),
            "f_string": .string(""), "f_bytes": .bytes([]), "f_enum": .enumValue(0), "r_int32": .list([]),
        ])
        #expect(try encode(zeros) == "{}")
        #expect(try decode(#"{"fInt32":0,"fString":"","fBytes":"","rInt32":[]}"#).fields.isEmpty)
        // proto2 optional: present at its default, so written.
        let field = ProtoMessage("google.protobuf.FieldDescriptorProto", ["number": .int32(0), "json_name": .string("x")])
        #expect(try encode(field) == #"{"number":0,"jsonName":"x"}"#)
        #expect(try decode(#"{"number":0}"#, as: field.typeName) == ProtoMessage(field.typeName, ["number": .int32(0)]))
    }

    @Test func encodeRejectsMalformedMessages() {
        for m in [
            ProtoMessage(allKinds, ["nope": .int32(1)]),
            ProtoMessage(allKinds, ["f_int32": .int64(1)]),
            ProtoMessage(allKinds, ["r_int32": .int32(1)]),
            ProtoMessage(allKinds, ["f_message": .message(ProtoMessage(allKinds))]),
            ProtoMessage(allKinds, ["m_string": .list([.string("a")])]),
            ProtoMessage("no.such.Type"),
        ] {
            #expect(throws: ProtoCodecError.self, "\(m)") { try ProtoJSON.encode(m) }
        }
    }

    @Test func productMessages() throws {
        let health = ProtoMessage("grpc.health.v1.HealthCheckResponse", ["status": .enumValue(1)])
        #expect(try encode(health) == #"{"status":"SERVING"}"#)
        #expect(try decode(#"{"status":"SERVING"}"#, as: health.typeName) == health)
        #expect(try encode(ProtoMessage(health.typeName, ["status": .enumValue(0)])) == "{}")

        let get = try decode(#"{"id":"42","gateway":"efi"}"#, as: "pixtrack.v1.GetPaymentRequest")
        #expect(get == ProtoMessage("pixtrack.v1.GetPaymentRequest", ["id": .int64(42), "gateway": .string("efi")]))
        #expect(try encode(get) == #"{"id":"42","gateway":"efi"}"#)
        #expect(try canonical(#"{"gateway_transaction_id":"tx-1"}"#, as: "pixtrack.v1.GetPaymentRequest")
            == #"{"gatewayTransactionId":"tx-1"}"#)

        let list = #"{"payments":[{"id":"7","status":"PAYMENT_STATUS_PAID","amountCents":"1990","#
            + #""flaggedForReview":true,"createdAtUnixMs":"1700000000000"}],"nextPageToken":"p2"}"#
        #expect(try canonical(list, as: "pixtrack.v1.ListPaymentsResponse") == list)
        #expect(jsonError(#"{"payments":[{"status":"PAID"}]}"#, as: "pixtrack.v1.ListPaymentsResponse")
            == #"field "payments[0].status": unknown value "PAID" for enum pixtrack.v1.PaymentStatus"#)
    }

    /// Every compiled type: `{}` decodes to the empty message, which renders as `{}`.
    @Test func everyCompiledTypeHandlesTheEmptyObject() throws {
        for name in ProtoSchema.messageTypeNames() {
            let m = try decode("{}", as: name)
            #expect(m.fields.isEmpty, "\(name)")
            #expect(try encode(m) == "{}", "\(name)")
        }
    }
}
