/// Turns a parsed `JSONValue` into a `ProtoMessage`, checking every value against its field.
///
/// Error messages start with the field's path, keys as the user wrote them, list indices and
/// map keys in brackets: `field "payments[2].status": …`, `field "labels[env]": …`.
struct JSONToProto {
    let schema: JSONSchema

    func message(_ json: JSONValue, _ info: JSONMessageInfo, path: String) throws -> ProtoMessage {
        guard case .object(let members) = json else {
            throw fail(path, "expected a JSON object for \(info.type.name), got \(json.summary)")
        }
        var fields: [String: ProtoValue] = [:]
        var keysUsed: [String: String] = [:]
        var oneofOwners: [Int: String] = [:]
        for member in members {
            guard let f = info.field(forKey: member.key) else {
                let location = path.isEmpty ? "" : " at \(JSONWriter.quoted(path))"
                throw ProtoCodecError("unknown field \(JSONWriter.quoted(member.key)) in \(info.type.name)\(location)")
            }
            let fieldPath = path.isEmpty ? member.key : "\(path).\(member.key)"
            if let earlier = keysUsed[f.info.name] {
                throw fail(fieldPath, "the same field as \(JSONWriter.quoted(earlier)); give it once")
            }
            keysUsed[f.info.name] = member.key
            if case .null = member.value { continue }  // null means "unset"
            switch f.info.presence {
            case .repeated:
                // An empty list is left out, as ProtoCodec.decode leaves it out.
                let items = try f.mapEntry.map { try map(member.value, f, $0, path: fieldPath) }
                    ?? list(member.value, f, path: fieldPath)
                if !items.isEmpty { fields[f.info.name] = .list(items) }
            case .implicit:
                let value = try scalar(member.value, f, path: fieldPath)
                if !value.isProto3Default { fields[f.info.name] = value }
            case .oneof:
                if let other = oneofOwners[f.info.quantifierOffset] {
                    let group = f.oneofName.map { "oneof \(JSONWriter.quoted($0))" } ?? "its oneof"
                    throw fail(fieldPath, "\(group) of \(info.type.name) already has \(JSONWriter.quoted(other)); set at most one")
                }
                oneofOwners[f.info.quantifierOffset] = member.key
                fields[f.info.name] = try scalar(member.value, f, path: fieldPath)
            case .optional, .required:
                fields[f.info.name] = try scalar(member.value, f, path: fieldPath)
            }
        }
        return ProtoMessage(info.type.name, fields)
    }

    private func list(_ json: JSONValue, _ f: JSONField, path: String) throws -> [ProtoValue] {
        guard case .array(let items) = json else {
            throw fail(path, "expected an array, got \(json.summary)")
        }
        return try items.enumerated().map { i, item in
            let itemPath = "\(path)[\(i)]"
            if case .null = item { throw fail(itemPath, "null is not allowed in a repeated field") }
            return try scalar(item, f, path: itemPath)
        }
    }

    private func map(_ json: JSONValue, _ f: JSONField, _ entry: MessageType, path: String) throws -> [ProtoValue] {
        guard case .object(let members) = json else {
            throw fail(path, "expected an object (a map), got \(json.summary)")
        }
        let entryInfo = try schema.message(named: entry.name)
        guard let keyField = entryInfo.field(forKey: "key"), let valueField = entryInfo.field(forKey: "value") else {
            throw fail(path, "malformed map entry type \(entry.name)")
        }
        var seen: Set<ProtoValue> = []
        var entries: [ProtoValue] = []
        for member in members {
            let entryPath = "\(path)[\(member.key)]"
            let key = try mapKey(member.key, keyField, path: entryPath)
            guard seen.insert(key).inserted || keyField.info.kind == .string else {
                throw fail(entryPath, "duplicate map key")
            }
            if case .null = member.value { throw fail(entryPath, "null is not allowed as a map value") }
            let value = try scalar(member.value, valueField, path: entryPath)
            var fields: [String: ProtoValue] = [:]
            if !key.isProto3Default { fields["key"] = key }
            if !value.isProto3Default { fields["value"] = value }
            entries.append(.message(ProtoMessage(entry.name, fields)))
        }
        return entries
    }

    /// Map keys are always JSON strings; int and bool keys are converted (`"-5"`, `"true"`).
    /// String keys need no duplicate check: the parser already rejected byte-identical keys.
    private func mapKey(_ key: String, _ f: JSONField, path: String) throws -> ProtoValue {
        switch f.info.kind {
        case .string:
            try checkNoNUL(key, path: path)
            return .string(key)
        case .bool:
            switch key {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw fail(path, "map key must be \"true\" or \"false\"")
            }
        case .int32, .int64, .uint32, .uint64:
            let parsed = JSONNumber.integer(key, plain: true)
            guard let value = integerValue(parsed, f.info.kind) else {
                throw fail(path, "map key is not a valid \(f.info.kind)")
            }
            return value
        default:
            throw fail(path, "unsupported map key type \(f.info.kind)")
        }
    }

    /// One element of a field (the field itself when singular).
    private func scalar(_ json: JSONValue, _ f: JSONField, path: String) throws -> ProtoValue {
        let kind = f.info.kind
        switch (kind, json) {
        case (.int32, .number(let t)), (.int32, .string(let t)), (.int64, .number(let t)), (.int64, .string(let t)),
             (.uint32, .number(let t)), (.uint32, .string(let t)), (.uint64, .number(let t)), (.uint64, .string(let t)):
            let parsed = JSONNumber.integer(t)
            if let value = integerValue(parsed, kind) { return value }
            switch parsed {
            case .value, .tooLarge: throw fail(path, "\(json.summary) is out of range for \(kind)")
            case .fraction, .malformed: throw fail(path, "expected an integer, got \(json.summary)")
            }
        case (.float, .number(let t)), (.float, .string(let t)), (.double, .number(let t)), (.double, .string(let t)):
            let isString = if case .string = json { true } else { false }
            let value: ProtoValue? = kind == .float
                ? JSONNumber.floatingPoint(t, isString: isString).map { .float($0) }
                : JSONNumber.floatingPoint(t, isString: isString).map { .double($0) }
            if let value { return value }
            let wellFormed = JSONParser.numberEnd(Array(t.utf8), from: 0) == t.utf8.count
            throw fail(path, wellFormed ? "\(json.summary) is out of range for \(kind)" : "expected a number, got \(json.summary)")
        case (.bool, .bool(let b)): return .bool(b)
        case (.string, .string(let s)):
            try checkNoNUL(s, path: path)
            return .string(s)
        case (.bytes, .string(let s)):
            guard let bytes = Base64.decode(s) else { throw fail(path, "expected base64, got \(json.summary)") }
            return .bytes(bytes)
        case (.enumValue, .string(let name)):
            guard let number = f.enumType?.numbersByName[name] else {
                throw fail(path, "unknown value \(json.summary) for enum \(f.enumType?.name ?? "type")")
            }
            return .enumValue(number)
        case (.enumValue, .number(let t)):
            let parsed = JSONNumber.integer(t)
            guard let value = JSONNumber.signed(parsed, min: Int64(Int32.min), max: Int64(Int32.max)) else {
                if case .fraction = parsed { throw fail(path, "expected an enum name or integer, got \(json.summary)") }
                throw fail(path, "\(json.summary) is out of range for an enum")
            }
            return .enumValue(Int32(value))
        case (.message, _):
            let info = try schema.message(named: try ProtoRegistry.shared.type(of: f.info).name)
            return .message(try message(json, info, path: path))
        default:
            throw fail(path, "expected \(Self.expectation(kind)), got \(json.summary)")
        }
    }

    private func integerValue(_ parsed: JSONNumber.Integer, _ kind: FieldKind) -> ProtoValue? {
        switch kind {
        case .int32: JSONNumber.signed(parsed, min: Int64(Int32.min), max: Int64(Int32.max)).map { .int32(Int32($0)) }
        case .int64: JSONNumber.signed(parsed, min: .min, max: .max).map { .int64($0) }
        case .uint32: JSONNumber.unsigned(parsed, max: UInt64(UInt32.max)).map { .uint32(UInt32($0)) }
        case .uint64: JSONNumber.unsigned(parsed, max: .max).map { .uint64($0) }
        default: nil
        }
    }

    /// protobuf-c strings are NUL-terminated: such a value could never be encoded intact.
    private func checkNoNUL(_ s: String, path: String) throws {
        if s.utf8.contains(0) { throw fail(path, "strings containing U+0000 are not supported") }
    }

    private static func expectation(_ kind: FieldKind) -> String {
        switch kind {
        case .int32, .int64, .uint32, .uint64: "an integer"
        case .float, .double: "a number"
        case .bool: "true or false"
        case .string: "a string"
        case .bytes: "a base64 string"
        case .enumValue: "an enum name or integer"
        case .message: "an object"
        }
    }

    private func fail(_ path: String, _ message: String) -> ProtoCodecError {
        ProtoCodecError(path.isEmpty ? message : "field \(JSONWriter.quoted(path)): \(message)")
    }
}
