import ProtoCodec

/// A message of any compiled type with every field set, for seeds: read off the embedded
/// FileDescriptorSet (the codec does not expose its field tables). Scalars get non-default
/// values, repeated fields and maps two entries, one member of each oneof is set, and nested
/// messages go two levels deep.
enum SampleMessages {
    private struct Field {
        let name: String
        let type: Int32
        let repeated: Bool
        /// Full name without the leading dot, for message and enum fields.
        let typeName: String
        /// Set for all but the first member of a (real) oneof: left out.
        let skipped: Bool
    }

    private struct Tables {
        var fields: [String: [Field]] = [:]
        var mapEntries: Set<String> = []
    }

    private static let tables: Tables = {
        var t = Tables()
        guard let set = try? ProtoCodec.decode(ProtoSchema.fileDescriptorSet, as: "google.protobuf.FileDescriptorSet") else { return t }
        func walk(_ message: ProtoMessage, prefix: String) {
            let name = prefix + "." + message.string("name")
            if message.message("options")?.bool("map_entry") == true { t.mapEntries.insert(name) }
            var oneofsSeen = Set<Int32>()
            t.fields[name] = message.list("field").compactMap { value in
                guard case .message(let f) = value else { return nil }
                var skipped = false
                if f["oneof_index"] != nil, !f.bool("proto3_optional") {
                    skipped = !oneofsSeen.insert(f.int32("oneof_index")).inserted
                }
                return Field(name: f.string("name"), type: f.enumValue("type"), repeated: f.enumValue("label") == 3,
                             typeName: String(f.string("type_name").drop { $0 == "." }), skipped: skipped)
            }
            for case .message(let nested) in message.list("nested_type") { walk(nested, prefix: name) }
        }
        for case .message(let file) in set.list("file") {
            for case .message(let m) in file.list("message_type") { walk(m, prefix: file.string("package")) }
        }
        return t
    }()

    static func isMapEntry(_ type: String) -> Bool { tables.mapEntries.contains(type) }

    static func sample(_ type: String, depth: Int = 0) -> ProtoMessage {
        var fields: [String: ProtoValue] = [:]
        for f in tables.fields[type] ?? [] where !f.skipped {
            if f.repeated && isMapEntry(f.typeName) {
                fields[f.name] = .list((0..<2).map { .message(entry(f.typeName, $0, depth: depth)) })
            } else if let v = value(f, depth: depth, variant: 0) {
                fields[f.name] = f.repeated ? .list([v, value(f, depth: depth, variant: 1) ?? v]) : v
            }
        }
        return ProtoMessage(type, fields)
    }

    /// Map entry `i`: distinct keys.
    private static func entry(_ type: String, _ i: Int, depth: Int) -> ProtoMessage {
        var m = ProtoMessage(type)
        for f in tables.fields[type] ?? [] {
            m.fields[f.name] = value(f, depth: depth, variant: f.name == "key" ? i + 1 : 0)
        }
        return m
    }

    /// By descriptor type number (FieldDescriptorProto.Type); nil for groups and for messages
    /// past the nesting depth.
    private static func value(_ f: Field, depth: Int, variant: Int) -> ProtoValue? {
        let v = Int32(variant)
        switch f.type {
        case 1: return .double(19.9 + Double(v))
        case 2: return .float(-1.5 - Float(v))
        case 3, 16, 18: return .int64(-1_234_567_890_123 + Int64(v))
        case 4, 6: return .uint64(9_007_199_254_740_993 + UInt64(v))
        case 5, 15, 17: return .int32(-42 - v)
        case 7, 13: return .uint32(42 + UInt32(v))
        case 8: return .bool(variant % 2 == 0)
        case 9: return .string(variant == 0 ? "\(f.name) é" : "\(f.name)-\(variant)")
        case 12: return .bytes([0, 1, 0xFE, UInt8(truncatingIfNeeded: variant)])
        case 14: return .enumValue(1 + v)
        case 11: return depth < 2 ? .message(sample(f.typeName, depth: depth + 1)) : nil
        default: return nil
        }
    }
}
