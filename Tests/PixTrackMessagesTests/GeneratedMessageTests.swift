import PixTrackMessages
import Testing
@testable import ProtoCodec

/// The generated message types against the dynamic codec: same bytes for every message with
/// every field set, typed values that read what the dynamic codec wrote, and the same refusals.
@Suite struct GeneratedMessageTests {
    /// Types a `.proto` writer sees as messages: everything PixTrackProto compiled from `Proto/`
    /// except descriptor.proto's own types and map entries.
    static let expectedTypes: [MessageType] = ProtoSchema.messageTypeNames()
        .filter { !$0.hasPrefix("google.protobuf.") }
        .compactMap { try? ProtoRegistry.shared.type(named: $0) }
        .filter { !isMapEntry($0) }

    /// protoc's `FooEntry` nested in the message of a `map<…> foo` field (a top-level message
    /// that happens to be called `…Entry` is a message like any other).
    static func isMapEntry(_ t: MessageType) -> Bool {
        let parent = String(t.name[..<(t.name.lastIndex(of: ".") ?? t.name.startIndex)])
        return t.name.hasSuffix("Entry") && (try? ProtoRegistry.shared.type(named: parent)) != nil
            && t.fields.map(\.name) == ["key", "value"] && t.fields.map(\.number) == [1, 2]
    }

    /// A value of `kind` that differs per field and per `seed`, never the proto3 default.
    static func scalar(_ f: FieldInfo, _ seed: Int) -> ProtoValue {
        let n = Int(f.number) * 7 + seed
        switch f.kind {
        case .int32: return .int32(-Int32(n) * 1_003)
        case .int64: return .int64(-Int64(n) * 1_000_000_007)
        case .uint32: return .uint32(UInt32(n) * 40_009)
        case .uint64: return .uint64(UInt64(n) * 9_000_000_011)
        case .float: return .float(Float(n) + 0.25)
        case .double: return .double(Double(n) * -1.5)
        case .bool: return .bool(true)
        case .enumValue: return .enumValue(Int32(n % 3) + 1)
        case .string: return .string("v\(n) ação ✓")
        case .bytes: return .bytes([0, 255, UInt8(n % 256)])
        case .message: fatalError("not a scalar")
        }
    }

    /// `type` with every field set (the oneof member number `variant` of each oneof), nested
    /// messages filled `depth` levels down.
    static func sample(_ type: MessageType, variant: Int, depth: Int = 0) throws -> ProtoMessage {
        var fields: [String: ProtoValue] = [:]
        let oneofs = Dictionary(grouping: type.fields.filter { $0.presence == .oneof }, by: \.quantifierOffset)
        for f in type.fields {
            if f.presence == .oneof {
                let group = oneofs[f.quantifierOffset]!.sorted { $0.number < $1.number }
                guard group[variant % group.count].number == f.number else { continue }
            }
            if f.presence == .repeated {
                if f.kind == .message, let entry = try? ProtoRegistry.shared.type(of: f), isMapEntry(entry) {
                    let keyField = entry.fields[0], valueField = entry.fields[1]
                    // Two entries, keys ascending (the generated code writes maps sorted by key).
                    let keys: [ProtoValue] = switch keyField.kind {
                    case .string: [.string("alpha"), .string("beta")]
                    case .int32: [.int32(-3), .int32(5)]
                    case .int64: [.int64(-3), .int64(5)]
                    case .uint32: [.uint32(3), .uint32(5)]
                    case .uint64: [.uint64(3), .uint64(5)]
                    default: [.bool(false), .bool(true)]
                    }
                    fields[f.name] = .list(try keys.enumerated().map { i, k in
                        let value = valueField.kind == .message
                            ? ProtoValue.message(try sample(try ProtoRegistry.shared.type(of: valueField), variant: variant, depth: depth + 1))
                            : scalar(valueField, i)
                        return .message(ProtoMessage(entry.name, ["key": k, "value": value]))
                    })
                } else if f.kind == .message {
                    let sub = try ProtoRegistry.shared.type(of: f)
                    fields[f.name] = .list([.message(try sample(sub, variant: variant, depth: depth + 1)), .message(ProtoMessage(sub.name, [:]))])
                } else {
                    // Repeated strings and bytes keep empty elements.
                    var items = [scalar(f, 0), scalar(f, 1)]
                    if f.kind == .string { items.append(.string("")) }
                    if f.kind == .bytes { items.append(.bytes([])) }
                    fields[f.name] = .list(items)
                }
            } else if f.kind == .message {
                let sub = try ProtoRegistry.shared.type(of: f)
                fields[f.name] = .message(depth < 2 ? try sample(sub, variant: variant, depth: depth + 1) : ProtoMessage(sub.name, [:]))
            } else {
                fields[f.name] = scalar(f, variant)
            }
        }
        return ProtoMessage(type.name, fields)
    }

    static func variants(_ type: MessageType) -> Int {
        Dictionary(grouping: type.fields.filter { $0.presence == .oneof }, by: \.quantifierOffset).values.map(\.count).max() ?? 1
    }

    @Test func everyMessageOfProtoHasAGeneratedType() {
        let generated = Set(PixTrackMessages.all.keys), expected = Set(Self.expectedTypes.map(\.name))
        #expect(generated.subtracting(expected).isEmpty && expected.subtracting(generated).isEmpty,
                "generated only: \(generated.subtracting(expected).sorted()); missing: \(expected.subtracting(generated).sorted())")
        #expect(Self.expectedTypes.count > 60)
        for (name, type) in PixTrackMessages.all { #expect(type.protoMessageName == name) }
    }

    @Test func everyMessageWithEveryFieldSetEncodesToTheDynamicCodecsBytes() throws {
        var compared = 0
        for type in Self.expectedTypes {
            let generated = try #require(PixTrackMessages.all[type.name])
            for variant in 0..<Self.variants(type) {
                let dynamic = try Self.sample(type, variant: variant)
                let bytes = try ProtoCodec.encode(dynamic)
                let typed = try generated.init(serializedBytes: bytes)
                #expect(try typed.serializedBytes() == bytes, "\(type.name) variant \(variant)")
                // And what the typed value writes reads back as the same message.
                #expect(try ProtoCodec.decode(try typed.serializedBytes(), as: type.name) == ProtoCodec.decode(bytes, as: type.name))
                compared += 1
            }
            // Every field at its default: nothing on the wire, either way.
            #expect(try generated.init().serializedBytes() == ProtoCodec.encode(ProtoMessage(type.name, [:])), "\(type.name) empty")
        }
        #expect(compared >= Self.expectedTypes.count)
    }

    @Test func typedFieldsReadWhatTheDynamicCodecWrote() throws {
        let request = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckRequest", ["service": .string("pixtrack.v1.PaymentService")]))
        #expect(try Grpc_Health_V1_HealthCheckRequest(serializedBytes: request).service == "pixtrack.v1.PaymentService")

        typealias K = Pixtrack_Testing_V1_AllKinds
        var k = K()
        k.fSint32 = -5
        k.fSfixed64 = -9_000_000_000
        k.fFixed32 = 4_000_000_000
        k.fDouble = 2.5
        k.fBool = true
        k.fString = "olá"
        k.fBytes = [1, 0, 2]
        k.fEnum = .blue
        var inner = K.Inner()
        inner.name = "in"
        inner.number = 7
        k.fMessage = inner
        var child = K()
        child.fInt64 = 42
        k.fChild = child
        k.rSint64 = [-1, 0, 1]
        k.rString = ["a", "", "c"]
        k.rEnum = [.red, .unrecognized(9)]
        k.mString = ["z": "last", "a": "first"]
        k.mMessage = [2: inner, -1: K.Inner()]
        k.choice = .oMessage(inner)
        let m = try ProtoCodec.decode(try k.serializedBytes(), as: K.protoMessageName)
        #expect(m.int32("f_sint32") == -5 && m.int64("f_sfixed64") == -9_000_000_000 && m.uint32("f_fixed32") == 4_000_000_000)
        #expect(m.double("f_double") == 2.5 && m.bool("f_bool") && m.string("f_string") == "olá" && m.bytes("f_bytes") == [1, 0, 2])
        #expect(m.enumValue("f_enum") == 2)
        #expect(m.message("f_message")?.string("name") == "in" && m.message("f_child")?.int64("f_int64") == 42)
        #expect(m.message("o_message")?.int32("number") == 7)
        #expect(m.fields["r_string"] == .list([.string("a"), .string(""), .string("c")]))
        #expect(m.fields["r_enum"] == .list([.enumValue(1), .enumValue(9)]))
        // Map entries come out sorted by key.
        #expect(m.fields["m_string"] == .list([
            .message(ProtoMessage("pixtrack.testing.v1.AllKinds.MStringEntry", ["key": .string("a"), "value": .string("first")])),
            .message(ProtoMessage("pixtrack.testing.v1.AllKinds.MStringEntry", ["key": .string("z"), "value": .string("last")])),
        ]))
        // And the typed value reads its own bytes back whole.
        #expect(try K(serializedBytes: try k.serializedBytes()) == k)
    }

    @Test func unknownEnumNumbersAreKept() throws {
        let bytes = try ProtoCodec.encode(ProtoMessage("grpc.health.v1.HealthCheckResponse", ["status": .enumValue(77)]))
        let r = try Grpc_Health_V1_HealthCheckResponse(serializedBytes: bytes)
        #expect(r.status == .unrecognized(77))
        #expect(try r.serializedBytes() == bytes)
        #expect(Grpc_Health_V1_HealthCheckResponse.ServingStatus(rawValue: 2) == .notServing)
    }

    @Test func whatTheDynamicCodecRefusesIsRefusedToo() throws {
        // Not a message at all.
        #expect(throws: MessageCodingError.self) { try Grpc_Health_V1_HealthCheckRequest(serializedBytes: [0x0A, 0x05, 0x61]) }
        // A string that is not UTF-8.
        #expect(throws: MessageCodingError.self) { try Grpc_Health_V1_HealthCheckRequest(serializedBytes: [0x0A, 0x02, 0xC3, 0x28]) }
        // protobuf-c strings end at NUL: refused rather than cut.
        var r = Grpc_Health_V1_HealthCheckRequest()
        r.service = "a\u{0}b"
        #expect(throws: MessageCodingError.self) { try r.serializedBytes() }
        // A recursive message nested past 100 levels is refused before protobuf-c recurses into it.
        var deep: [UInt8] = []
        for _ in 0..<150 { deep = [0x92, 0x01] + varint(deep.count) + deep }  // field 18 (f_child)
        #expect(throws: MessageCodingError.self) { try Pixtrack_Testing_V1_AllKinds(serializedBytes: deep) }
        #expect(throws: ProtoCodecError.self) { try ProtoCodec.decode(deep, as: "pixtrack.testing.v1.AllKinds") }
        var shallow: [UInt8] = []
        for _ in 0..<50 { shallow = [0x92, 0x01] + varint(shallow.count) + shallow }
        var depth = 0
        var node: Pixtrack_Testing_V1_AllKinds? = try Pixtrack_Testing_V1_AllKinds(serializedBytes: shallow)
        while let n = node?.fChild { depth += 1; node = n }
        #expect(depth == 50)
    }

    @Test func proto3JSONIsTheDynamicCodecs() throws {
        var k = Pixtrack_Testing_V1_AllKinds()
        k.fInt64 = -12
        k.fEnum = .red
        k.mString = ["b": "2", "a": "1"]
        k.choice = .oString("")
        let json = try k.jsonUTF8()
        #expect(json == (try ProtoJSON.encode(try ProtoCodec.decode(try k.serializedBytes(), as: "pixtrack.testing.v1.AllKinds"))))
        #expect(String(decoding: json, as: UTF8.self).contains("\"-12\""))  // int64 as a JSON string
        #expect(try Pixtrack_Testing_V1_AllKinds(jsonUTF8: json) == k)
        #expect(throws: MessageCodingError.self) { try Pixtrack_Testing_V1_AllKinds(jsonUTF8: Array(#"{"fInt64": "x"}"#.utf8)) }
    }
}

private func varint(_ n: Int) -> [UInt8] {
    var v = UInt64(n), out: [UInt8] = []
    while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
    return out + [UInt8(v)]
}
