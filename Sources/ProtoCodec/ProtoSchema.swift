/// One RPC method of a compiled service.
public struct ProtoMethodInfo: Sendable, Hashable {
    /// Short name, e.g. `"Check"`.
    public let name: String
    /// Full name of the request type, e.g. `"grpc.health.v1.HealthCheckRequest"`.
    public let inputType: String
    /// Full name of the response type.
    public let outputType: String
}

/// One service compiled into PixTrackProto.
public struct ProtoServiceInfo: Sendable, Hashable {
    /// Full name, e.g. `"grpc.health.v1.Health"`.
    public let name: String
    public let methods: [ProtoMethodInfo]

    /// The HTTP/2 `:path` of a method: `/package.Service/Method`.
    public func path(of method: ProtoMethodInfo) -> String { "/\(name)/\(method.name)" }
}

/// What PixTrackProto contains: message types, services and the FileDescriptorSet behind them.
public enum ProtoSchema {
    /// Every message type compiled into PixTrackProto (nested and map-entry types included),
    /// by full name, sorted.
    public static func messageTypeNames() -> [String] {
        ProtoRegistry.shared.byName.keys.sorted()
    }

    /// Services from the protoc-c service descriptors, sorted by name; methods in `.proto` order.
    /// (protoc-c records no streaming flags: use `ReflectionIndex` for those.)
    public static var services: [ProtoServiceInfo] { cachedServices }

    /// The serialized `google.protobuf.FileDescriptorSet` of every file under `Proto/`, with
    /// imports, embedded by `scripts/gen-proto`.
    public static var fileDescriptorSet: [UInt8] { cachedDescriptorSet }

    private static let cachedServices = ProtobufC.services().sorted { $0.name < $1.name }
    private static let cachedDescriptorSet = ProtobufC.descriptorSet()
}
