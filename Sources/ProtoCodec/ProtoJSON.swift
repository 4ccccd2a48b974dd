/// The proto3 JSON mapping for every message type compiled into PixTrackProto, driven by the
/// same descriptors as `ProtoCodec` (no per-message code).
///
/// Output: lowerCamelCase keys in field-number order; int64-family values as strings; bytes as
/// standard base64; enums by name (an unknown number as a number); maps as objects; fields
/// holding their proto3 default omitted (oneof members and proto2 optional fields are written
/// whenever set). Input is strict: unknown fields, duplicate keys, wrong types, out-of-range
/// numbers and two members of one oneof are errors that name the field's path.
public enum ProtoJSON {
    /// Parses proto3 JSON into a message of `typeName`. Throws ProtoCodecError with a clear, user-facing message
    /// naming the field path, e.g. `field "amountCents": expected an integer, got "abc"` or `unknown field "foo" in pixtrack.v1.GetPaymentRequest`.
    ///
    /// Keys may be lowerCamelCase or the `.proto` name; `null` leaves a field unset. Fields that
    /// end up holding their proto3 default are left out of the result, as `ProtoCodec.decode`
    /// does, so `decode(json)` equals `ProtoCodec.decode(ProtoCodec.encode(decode(json)))`.
    /// Syntax errors name a zero-based byte offset: `invalid JSON at byte 17: expected ',' or '}'`.
    /// The caller bounds the input size; nesting is limited to 64 levels.
    public static func decode(_ json: [UInt8], as typeName: String) throws -> ProtoMessage {
        let info = try JSONSchema.shared.message(named: typeName)
        let value = try JSONParser.parse(json)
        return try JSONToProto(schema: .shared).message(value, info, path: "")
    }

    /// Renders proto3 JSON. `pretty` = 2-space indentation with a trailing newline (for the CLI); compact otherwise.
    ///
    /// Throws, like `ProtoCodec.encode`, on an unknown type or field name, a value of the wrong
    /// kind for its field, two members of one oneof, or nesting deeper than 100 messages.
    public static func encode(_ message: ProtoMessage, pretty: Bool = false) throws -> [UInt8] {
        let value = try ProtoToJSON(schema: .shared).object(message, depth: 0)
        return JSONWriter.render(value, pretty: pretty)
    }
}

/// Turns a `ProtoMessage` into a `JSONValue` tree.
private struct ProtoToJSON {
    let schema: JSONSchema

    func object(_ message: ProtoMessage, depth: Int) throws -> JSONValue {
        guard depth <= ProtoEncoder.maxDepth else {
            throw ProtoCodecError("message nesting deeper than \(ProtoEncoder.maxDepth) levels")
        }
        let info = try schema.message(named: message.typeName)
        for name in message.fields.keys.sorted() where info.type.fieldsByName[name] == nil {
            throw ProtoCodecError("\(info.type.name) has no field '\(name)'")
        }
        var members: [JSONMember] = []
        var oneofOwners: [Int: String] = [:]
        for f in info.fields {
            guard let value = message.fields[f.info.name] else { continue }
            switch f.info.presence {
            case .repeated:
                guard case .list(let items) = value else {
                    throw mismatch(info, f, "is repeated: expected a list, got \(value.kindName)")
                }
                guard !items.isEmpty else { continue }
                if let entry = f.mapEntry {
                    members.append(JSONMember(f.jsonName, try map(items, info, f, entry, depth: depth)))
                } else {
                    members.append(JSONMember(f.jsonName, .array(try items.map { try scalar($0, info, f, depth: depth) })))
                }
            case .implicit:
                let json = try scalar(value, info, f, depth: depth)
                if !value.isProto3Default { members.append(JSONMember(f.jsonName, json)) }
            case .oneof:
                if let other = oneofOwners[f.info.quantifierOffset] {
                    throw ProtoCodecError("\(info.type.name): '\(other)' and '\(f.info.name)' are in the same oneof; set only one")
                }
                oneofOwners[f.info.quantifierOffset] = f.info.name
                members.append(JSONMember(f.jsonName, try scalar(value, info, f, depth: depth)))
            case .optional, .required:
                members.append(JSONMember(f.jsonName, try scalar(value, info, f, depth: depth)))
            }
        }
        return .object(members)
    }

    /// One element of a field (the field itself when singular).
    private func scalar(_ value: ProtoValue, _ info: JSONMessageInfo, _ f: JSONField, depth: Int) throws -> JSONValue {
        switch (f.info.kind, value) {
        case (.int32, .int32(let v)): return .number(String(v))
        case (.uint32, .uint32(let v)): return .number(String(v))
        case (.int64, .int64(let v)): return .string(String(v))
        case (.uint64, .uint64(let v)): return .string(String(v))
        case (.float, .float(let v)): return JSONNumber.json(v)
        case (.double, .double(let v)): return JSONNumber.json(v)
        case (.bool, .bool(let v)): return .bool(v)
        case (.string, .string(let s)): return .string(s)
        case (.bytes, .bytes(let b)): return .string(Base64.encode(b))
        case (.enumValue, .enumValue(let v)):
            if let name = f.enumType?.namesByNumber[v] { return .string(name) }
            return .number(String(v))
        case (.message, .message(let m)):
            let fieldType = try ProtoRegistry.shared.type(of: f.info).name
            guard m.typeName == fieldType else {
                throw mismatch(info, f, "holds \(fieldType), not \(m.typeName)")
            }
            return try object(m, depth: depth + 1)
        default:
            throw mismatch(info, f, "is \(f.info.kind), cannot hold \(value.kindName)")
        }
    }

    /// A map field (a list of entry messages) as an object; a repeated key keeps its first
    /// position and its last value, as protobuf's parsers do.
    private func map(_ items: [ProtoValue], _ info: JSONMessageInfo, _ f: JSONField, _ entry: MessageType,
                     depth: Int) throws -> JSONValue {
        let entryInfo = try schema.message(named: entry.name)
        guard let keyField = entryInfo.field(forKey: "key"), let valueField = entryInfo.field(forKey: "value") else {
            throw mismatch(info, f, "has a malformed map entry type \(entry.name)")
        }
        var members: [JSONMember] = []
        var positions: [[UInt8]: Int] = [:]  // by bytes: "é" and "e\u{301}" are different keys
        for item in items {
            guard case .message(let m) = item, m.typeName == entry.name else {
                throw mismatch(info, f, "is a map: expected \(entry.name) entries, got \(item.kindName)")
            }
            for name in m.fields.keys.sorted() where name != "key" && name != "value" {
                throw ProtoCodecError("\(entry.name) has no field '\(name)'")
            }
            // (A message-typed key has no default; mapKey rejects it either way.)
            let key = try mapKey(m.fields["key"] ?? keyField.info.kind.defaultValue ?? .list([]), entryInfo, keyField)
            let value = try m.fields["value"].map { try scalar($0, entryInfo, valueField, depth: depth) }
                ?? defaultJSON(valueField)
            if let i = positions[Array(key.utf8)] {
                members[i] = JSONMember(key, value)
            } else {
                positions[Array(key.utf8)] = members.count
                members.append(JSONMember(key, value))
            }
        }
        return .object(members)
    }

    private func mapKey(_ value: ProtoValue, _ info: JSONMessageInfo, _ f: JSONField) throws -> String {
        switch (f.info.kind, value) {
        case (.string, .string(let s)): s
        case (.int32, .int32(let v)): String(v)
        case (.int64, .int64(let v)): String(v)
        case (.uint32, .uint32(let v)): String(v)
        case (.uint64, .uint64(let v)): String(v)
        case (.bool, .bool(let v)): v ? "true" : "false"
        default: throw mismatch(info, f, "is \(f.info.kind), cannot hold \(value.kindName)")
        }
    }

    /// The JSON of an unset map value: its type's default (`{}` for a message).
    private func defaultJSON(_ f: JSONField) -> JSONValue {
        switch f.info.kind {
        case .message: return .object([])
        case .enumValue: return f.enumType?.namesByNumber[0].map { .string($0) } ?? .number("0")
        case .int64, .uint64: return .string("0")
        case .int32, .uint32, .float, .double: return .number("0")
        case .bool: return .bool(false)
        case .string, .bytes: return .string("")
        }
    }

    private func mismatch(_ info: JSONMessageInfo, _ f: JSONField, _ what: String) -> ProtoCodecError {
        ProtoCodecError("\(info.type.name).\(f.info.name) \(what)")
    }
}

extension FieldKind {
    /// The proto3 default of a singular field of this kind (`nil` for messages: unset).
    var defaultValue: ProtoValue? {
        switch self {
        case .int32: .int32(0)
        case .int64: .int64(0)
        case .uint32: .uint32(0)
        case .uint64: .uint64(0)
        case .float: .float(0)
        case .double: .double(0)
        case .bool: .bool(false)
        case .enumValue: .enumValue(0)
        case .string: .string("")
        case .bytes: .bytes([])
        case .message: nil
        }
    }
}

extension ProtoValue {
    /// True for the values proto3 leaves off the wire, as protobuf-c decides: zero, empty, false,
    /// and for floats anything equal to 0, so -0.0 too (protobuf-c compares with 0 and does not
    /// write a -0.0: keeping it here would make a message that does not survive the wire). A
    /// message or list is never a default here.
    var isProto3Default: Bool {
        switch self {
        case .int32(let v): v == 0
        case .int64(let v): v == 0
        case .uint32(let v): v == 0
        case .uint64(let v): v == 0
        case .float(let v): v == 0
        case .double(let v): v == 0
        case .bool(let v): !v
        case .enumValue(let v): v == 0
        case .string(let s): s.isEmpty
        case .bytes(let b): b.isEmpty
        case .message, .list: false
        }
    }
}
