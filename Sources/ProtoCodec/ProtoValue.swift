/// One protobuf field value, independent of any generated code.
///
/// The case follows the field's declared type: `sint32`/`sfixed32` are `.int32`, `fixed32` is
/// `.uint32`, `sint64`/`sfixed64` are `.int64`, `fixed64` is `.uint64`. Repeated fields (and
/// maps, which protobuf models as repeated entry messages with `key` and `value`) are `.list`.
public indirect enum ProtoValue: Sendable, Hashable {
    case int32(Int32), int64(Int64), uint32(UInt32), uint64(UInt64)
    case float(Float), double(Double), bool(Bool)
    case string(String), bytes([UInt8])
    case enumValue(Int32)
    case message(ProtoMessage)
    case list([ProtoValue])
}

extension ProtoValue {
    /// A map field with string keys and values, as the list of entry messages protobuf uses.
    /// `entryType` is the entry's full name, e.g. `"pixtrack.v1.PluginConfig.CredentialsEntry"`.
    public static func stringMap(_ map: [String: String], entryType: String) -> ProtoValue {
        .list(map.sorted { $0.key < $1.key }.map {
            .message(ProtoMessage(entryType, ["key": .string($0.key), "value": .string($0.value)]))
        })
    }

    /// A short name of the case, for error messages.
    var kindName: String {
        switch self {
        case .int32: "int32"
        case .int64: "int64"
        case .uint32: "uint32"
        case .uint64: "uint64"
        case .float: "float"
        case .double: "double"
        case .bool: "bool"
        case .string: "string"
        case .bytes: "bytes"
        case .enumValue: "enumValue"
        case .message(let m): "message(\(m.typeName))"
        case .list: "list"
        }
    }
}
