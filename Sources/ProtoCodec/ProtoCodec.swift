/// Encodes and decodes any message type compiled into PixTrackProto, by full type name.
///
/// Driven by protobuf-c's descriptors: no per-message code. Decoding is safe on arbitrary bytes
/// (malformed data, excessive nesting, invalid UTF-8 all throw). Limitation inherited from
/// protobuf-c: strings are NUL-terminated C strings, so encoding a string containing U+0000
/// throws, and a received string is cut at its first NUL.
public enum ProtoCodec {
    /// Nesting deeper than this is rejected before protobuf-c, whose parser recurses, sees it.
    static let maxDepth = ProtoEncoder.maxDepth

    /// Parses wire bytes as `typeName` (e.g. `"grpc.health.v1.HealthCheckRequest"`).
    ///
    /// Fields holding their proto3 default are omitted from the result; unknown fields are dropped.
    public static func decode(_ bytes: [UInt8], as typeName: String) throws -> ProtoMessage {
        let registry = ProtoRegistry.shared
        let type = try registry.type(named: typeName)
        guard nestingWithinLimit(bytes, bytes.indices, type, registry: registry, depth: 0) else {
            throw ProtoCodecError("\(typeName): message nesting deeper than \(maxDepth) levels")
        }
        return try bytes.withUnsafeBytes { raw in
            guard let message = ProtobufC.unpack(type.descriptor, raw) else {
                throw ProtoCodecError("invalid wire data for \(typeName)")
            }
            defer { ProtobufC.freeUnpacked(message) }
            return try ProtoDecoder(registry: registry).read(message, as: type)
        }
    }

    /// Serializes `message`. Throws on an unknown type or field name, a value of the wrong
    /// kind for its field, two members of one oneof, or a missing proto2 required field.
    public static func encode(_ message: ProtoMessage) throws -> [UInt8] {
        let arena = ProtoArena()
        return try withExtendedLifetime(arena) {
            let root = try ProtoEncoder(registry: .shared, arena: arena).build(message)
            let size = ProtobufC.packedSize(root)
            guard size > 0 else { return [] }
            var written = 0
            let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                written = ProtobufC.pack(root, into: buffer.baseAddress!)
                count = min(written, size)
            }
            guard written == size else {
                throw ProtoCodecError("\(message.typeName): packed \(written) bytes, expected \(size)")
            }
            return bytes
        }
    }

    /// Walks only the length-delimited fields declared as messages, so the check costs one pass.
    private static func nestingWithinLimit(_ bytes: [UInt8], _ range: Range<Int>, _ type: MessageType,
                                           registry: ProtoRegistry, depth: Int) -> Bool {
        var reader = WireReader(bytes, range: range)
        while let field = reader.next() {
            guard case .lengthDelimited(let sub) = field.payload,
                  let f = type.fieldsByNumber[field.number], f.kind == .message,
                  let subType = try? registry.type(of: f) else { continue }
            guard depth < maxDepth,
                  nestingWithinLimit(bytes, sub, subType, registry: registry, depth: depth + 1) else { return false }
        }
        return true
    }
}
