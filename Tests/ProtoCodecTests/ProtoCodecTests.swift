import Testing
@testable import ProtoCodec

private let allKinds = "pixtrack.testing.v1.AllKinds"
private let inner = "pixtrack.testing.v1.AllKinds.Inner"

private func innerMessage(_ name: String, _ number: Int32) -> ProtoValue {
    .message(ProtoMessage(inner, ["name": .string(name), "number": .int32(number)]))
}

/// Every singular kind with a non-default value, plus repeated, map and oneof fields.
private func fullMessage() -> ProtoMessage {
    ProtoMessage(allKinds, [
        "f_int32": .int32(-42), "f_int64": .int64(Int64.min), "f_uint32": .uint32(UInt32.max),
        "f_uint64": .uint64(UInt64.max), "f_sint32": .int32(-7), "f_sint64": .int64(-9_000_000_000),
        "f_fixed32": .uint32(0xdead_beef), "f_fixed64": .uint64(0x0123_4567_89ab_cdef),
        "f_sfixed32": .int32(-1), "f_sfixed64": .int64(Int64.max), "f_float": .float(1.5),
        "f_double": .double(-2.25), "f_bool": .bool(true), "f_string": .string("olá, 世界 🚀"),
        "f_bytes": .bytes([0, 1, 2, 255]), "f_enum": .enumValue(2), "f_message": innerMessage("in", 3),
        "f_child": .message(ProtoMessage(allKinds, ["f_string": .string("child")])),
        "r_int32": .list([.int32(1), .int32(-2), .int32(300)]),
        "r_sint64": .list([.int64(-1), .int64(1)]),
        "r_fixed32": .list([.uint32(7)]),
        "r_double": .list([.double(0.5), .double(-0.0)]),
        "r_bool": .list([.bool(true), .bool(false)]),
        "r_string": .list([.string("a"), .string(""), .string("c")]),
        "r_bytes": .list([.bytes([]), .bytes([9])]),
        "r_enum": .list([.enumValue(1), .enumValue(0), .enumValue(99)]),
        "r_message": .list([innerMessage("x", 1), .message(ProtoMessage(inner))]),
        "r_uint64": .list([.uint64(0), .uint64(UInt64.max)]),
        "r_float": .list([.float(3.25)]),
        "m_string": .stringMap(["k1": "v1", "k2": "v2"], entryType: "\(allKinds).MStringEntry"),
        "m_message": .list([.message(ProtoMessage("\(allKinds).MMessageEntry",
                                                   ["key": .int32(5), "value": innerMessage("five", 5)]))]),
        "o_message": innerMessage("chosen", 8),
    ])
}

@Suite struct ProtoCodecTests {
    @Test func roundTripsEveryFieldKind() throws {
        let original = fullMessage()
        let decoded = try ProtoCodec.decode(try ProtoCodec.encode(original), as: allKinds)
        #expect(decoded == original)
        #expect(decoded.stringMap("m_string") == ["k1": "v1", "k2": "v2"])
        #expect(decoded.message("f_message")?.string("name") == "in")
        #expect(decoded.uint64("f_fixed64") == 0x0123_4567_89ab_cdef)
    }

    @Test(arguments: [
        ("o_string", ProtoValue.string("s")),
        ("o_int64", ProtoValue.int64(0)),  // a oneof member is present even at its default
        ("o_message", ProtoValue.message(ProtoMessage(inner))),
    ])
    func roundTripsEachOneofMember(name: String, value: ProtoValue) throws {
        let original = ProtoMessage(allKinds, [name: value])
        let bytes = try ProtoCodec.encode(original)
        #expect(!bytes.isEmpty)
        #expect(try ProtoCodec.decode(bytes, as: allKinds) == original)
    }

    @Test func rejectsTwoMembersOfOneOneof() {
        let m = ProtoMessage(allKinds, ["o_string": .string("a"), "o_int64": .int64(1)])
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.encode(m) }
    }

    @Test func matchesHandComputedWireEncoding() throws {
        let m = ProtoMessage("pixtrack.testing.v1.EchoRequest", [
            "text": .string("hi"), "payload": .bytes([1, 2]), "fail_code": .int32(150),
        ])
        // 0a 02 "hi" | 12 02 01 02 | 18 96 01 (150 = 0x96 0x01 as a varint), in field order.
        let expected: [UInt8] = [0x0a, 0x02, 0x68, 0x69, 0x12, 0x02, 0x01, 0x02, 0x18, 0x96, 0x01]
        #expect(try ProtoCodec.encode(m) == expected)
        #expect(try ProtoCodec.decode(expected, as: m.typeName) == m)

        // sint32 -2 zigzags to 3; a negative int32 takes ten bytes; packed repeated int32.
        let k = ProtoMessage(allKinds, ["f_sint32": .int32(-2), "f_int32": .int32(-1),
                                        "r_int32": .list([.int32(1), .int32(2)])])
        #expect(try ProtoCodec.encode(k) == [0x08] + [UInt8](repeating: 0xff, count: 9) + [0x01, 0x28, 0x03, 0xa2, 0x01, 0x02, 0x01, 0x02])
    }

    @Test func omitsProto3Defaults() throws {
        let m = ProtoMessage("pixtrack.testing.v1.EchoRequest", [
            "text": .string(""), "payload": .bytes([]), "fail_code": .int32(0), "fail_message": .string(""),
        ])
        #expect(try ProtoCodec.encode(m) == [])
        #expect(try ProtoCodec.encode(ProtoMessage(allKinds, ["r_string": .list([])])) == [])
        let decoded = try ProtoCodec.decode([], as: m.typeName)
        #expect(decoded.fields.isEmpty)
        #expect(decoded.string("text") == "" && decoded.int32("fail_code") == 0 && decoded.bytes("payload") == [])
    }

    @Test func keepsProto2OptionalPresence() throws {
        // proto2 optional: an explicitly set default is present and encoded (has_number = 1).
        let m = ProtoMessage("google.protobuf.FieldDescriptorProto", ["number": .int32(0), "name": .string("")])
        let bytes = try ProtoCodec.encode(m)
        #expect(bytes == [0x0a, 0x00, 0x18, 0x00])
        #expect(try ProtoCodec.decode(bytes, as: m.typeName) == m)
        #expect(try ProtoCodec.decode([], as: m.typeName).fields.isEmpty)
    }

    /// A -0.0 another encoder put in an implicit field is unset, as protobuf-c would never write
    /// one: decode∘encode stays the identity (found by scripts/fuzz, proto).
    @Test func negativeZeroInAnImplicitFieldIsUnset() throws {
        let wire: [UInt8] = [0x61, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x5d, 0, 0, 0, 0x80]  // f_double, f_float = -0.0
        let m = try ProtoCodec.decode(wire, as: "pixtrack.testing.v1.AllKinds")
        #expect(m.fields.isEmpty)
        #expect(try ProtoCodec.encode(m).isEmpty)
    }

    @Test func rejectsMissingProto2RequiredField() {
        // A required string left NULL fails protobuf_c_message_check (required scalars cannot).
        let m = ProtoMessage("google.protobuf.UninterpretedOption.NamePart", ["is_extension": .bool(true)])
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.encode(m) }
    }

    @Test func rejectsUnknownFieldsTypesAndWrongKinds() {
        let cases: [ProtoMessage] = [
            ProtoMessage("pixtrack.testing.v1.EchoRequest", ["txt": .string("typo")]),
            ProtoMessage("pixtrack.testing.v1.EchoRequest", ["text": .bytes([1])]),
            ProtoMessage("pixtrack.testing.v1.EchoRequest", ["fail_code": .int64(1)]),
            ProtoMessage("pixtrack.testing.v1.EchoRequest", ["text": .list([.string("a")])]),
            ProtoMessage("pixtrack.testing.v1.EchoResponse", ["metadata": .string("a")]),
            ProtoMessage(allKinds, ["f_message": .message(ProtoMessage("pixtrack.testing.v1.EchoRequest"))]),
            ProtoMessage(allKinds, ["f_enum": .int32(1)]),
            ProtoMessage("no.such.Type"),
        ]
        for m in cases {
            #expect(throws: ProtoCodecError.self, "\(m)") { try ProtoCodec.encode(m) }
        }
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.decode([], as: "no.such.Type") }
    }

    @Test func rejectsStringsWithNUL() {
        let m = ProtoMessage("pixtrack.testing.v1.EchoRequest", ["text": .string("a\u{0}b")])
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.encode(m) }
    }

    @Test func rejectsInvalidUTF8() throws {
        // field 1 (string), length 2, bytes C3 28: an invalid two-byte sequence.
        #expect(throws: ProtoCodecError.self) {
            try ProtoCodec.decode([0x0a, 0x02, 0xc3, 0x28], as: "pixtrack.testing.v1.EchoRequest")
        }
        // Inside a repeated string of a nested message, too.
        #expect(throws: ProtoCodecError.self) {
            try ProtoCodec.decode([0x8a, 0x01, 0x04, 0x0a, 0x02, 0xff, 0xfe], as: allKinds)
        }
        // The same bytes in a bytes field are fine.
        let ok = try ProtoCodec.decode([0x12, 0x02, 0xc3, 0x28], as: "pixtrack.testing.v1.EchoRequest")
        #expect(ok.bytes("payload") == [0xc3, 0x28])
    }

    @Test(arguments: [
        [0x08] as [UInt8],                 // truncated varint
        [0x0a, 0x05, 0x61],                // length past the end
        [0x0f],                            // wire type 7
        [0x00, 0x01],                      // field number 0
        [0x0b, 0x0c],                      // a group
        [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],  // 4 GiB length
        [0x1a, 0x02, 0x0a, 0x09],          // nested message truncated
    ])
    func rejectsMalformedBytes(bytes: [UInt8]) {
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.decode(bytes, as: "pixtrack.testing.v1.EchoResponse") }
    }

    @Test func dropsUnknownFields() throws {
        let m = try ProtoCodec.decode([0xf8, 0x06, 0x01, 0x0a, 0x01, 0x61], as: "pixtrack.testing.v1.EchoRequest")
        #expect(m == ProtoMessage("pixtrack.testing.v1.EchoRequest", ["text": .string("a")]))
    }

    @Test func limitsNestingDepth() throws {
        func nested(_ depth: Int) -> ProtoMessage {
            var m = ProtoMessage(allKinds, ["f_int32": .int32(1)])
            for _ in 0..<depth { m = ProtoMessage(allKinds, ["f_child": .message(m)]) }
            return m
        }
        let fine = nested(ProtoCodec.maxDepth)
        #expect(try ProtoCodec.decode(try ProtoCodec.encode(fine), as: allKinds) == fine)
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.encode(nested(ProtoCodec.maxDepth + 1)) }

        // Hand-built wire bytes 5,000 levels deep (field 18, length-delimited) must not reach
        // protobuf-c's recursive parser.
        var bytes: [UInt8] = []
        for _ in 0..<5_000 { bytes = [0x92, 0x01] + varint(bytes.count) + bytes }
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.decode(bytes, as: allKinds) }
    }
}

func varint(_ n: Int) -> [UInt8] {
    var v = UInt64(n)
    var out: [UInt8] = []
    repeat {
        out.append(UInt8(v & 0x7f) | (v > 0x7f ? 0x80 : 0))
        v >>= 7
    } while v > 0
    return out
}
