/// A protobuf message as a plain Swift value: its full type name and its set fields.
///
/// Fields are keyed by the name written in the `.proto` file. An absent key means unset, which
/// for proto3 scalars is the default value: the decoder omits fields that hold their default,
/// and the encoder never writes default proto3 scalars.
public struct ProtoMessage: Sendable, Hashable {
    /// Full name, e.g. `"grpc.health.v1.HealthCheckResponse"`.
    public let typeName: String
    /// Set fields by proto field name.
    public var fields: [String: ProtoValue]

    public init(_ typeName: String, _ fields: [String: ProtoValue] = [:]) {
        self.typeName = typeName
        self.fields = fields
    }

    /// The field's value, `nil` when unset. Assigning `nil` clears it.
    public subscript(_ name: String) -> ProtoValue? {
        get { fields[name] }
        set { fields[name] = newValue }
    }

    /// The string field, or `""` when unset or of another kind.
    public func string(_ name: String) -> String {
        if case .string(let v)? = fields[name] { return v }
        return ""
    }

    /// The bytes field, or `[]` when unset or of another kind.
    public func bytes(_ name: String) -> [UInt8] {
        if case .bytes(let v)? = fields[name] { return v }
        return []
    }

    /// The int32 (also sint32/sfixed32) field, or `0`.
    public func int32(_ name: String) -> Int32 {
        if case .int32(let v)? = fields[name] { return v }
        return 0
    }

    /// The int64 (also sint64/sfixed64) field, or `0`.
    public func int64(_ name: String) -> Int64 {
        if case .int64(let v)? = fields[name] { return v }
        return 0
    }

    /// The uint32 (also fixed32) field, or `0`.
    public func uint32(_ name: String) -> UInt32 {
        if case .uint32(let v)? = fields[name] { return v }
        return 0
    }

    /// The uint64 (also fixed64) field, or `0`.
    public func uint64(_ name: String) -> UInt64 {
        if case .uint64(let v)? = fields[name] { return v }
        return 0
    }

    /// The float field, or `0`.
    public func float(_ name: String) -> Float {
        if case .float(let v)? = fields[name] { return v }
        return 0
    }

    /// The double field, or `0`.
    public func double(_ name: String) -> Double {
        if case .double(let v)? = fields[name] { return v }
        return 0
    }

    /// The bool field, or `false`.
    public func bool(_ name: String) -> Bool {
        if case .bool(let v)? = fields[name] { return v }
        return false
    }

    /// The enum field's number, or `0` (every proto3 enum's default).
    public func enumValue(_ name: String) -> Int32 {
        if case .enumValue(let v)? = fields[name] { return v }
        return 0
    }

    /// The message field, or `nil` when unset.
    public func message(_ name: String) -> ProtoMessage? {
        if case .message(let v)? = fields[name] { return v }
        return nil
    }

    /// The repeated field's elements, or `[]`.
    public func list(_ name: String) -> [ProtoValue] {
        if case .list(let v)? = fields[name] { return v }
        return []
    }

    /// A map field with string keys and values (a list of `key`/`value` entry messages).
    public func stringMap(_ name: String) -> [String: String] {
        var map: [String: String] = [:]
        for case .message(let entry) in list(name) {
            map[entry.string("key")] = entry.string("value")  // the last duplicate wins, as in protobuf
        }
        return map
    }
}
