internal import CProtobufC

/// Owns every allocation made while building one C message graph; all freed together.
///
/// protobuf-c's `pack` only reads the graph, so nothing in it outlives the arena.
final class ProtoArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    /// Zeroed memory, at least one byte so that every pointer is distinct and non-NULL.
    func allocate(_ byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let size = max(byteCount, 1)
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: max(alignment, 16))
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        blocks.append(p)
        return p
    }

    deinit {
        for b in blocks { b.deallocate() }
    }
}

/// Builds the protobuf-c struct graph for a `ProtoMessage` inside an arena.
///
/// Every struct starts from the descriptor's `message_init` (never zeroed memory: that has a NULL
/// descriptor and wrong proto2 defaults), then each set field is stored at its descriptor offset.
struct ProtoEncoder {
    /// Deeper values are refused rather than risking the stack (protobuf's own default limit).
    static let maxDepth = 100

    let registry: ProtoRegistry
    let arena: ProtoArena

    func build(_ message: ProtoMessage, depth: Int = 0) throws -> UnsafeMutableRawPointer {
        guard depth <= Self.maxDepth else {
            throw ProtoCodecError("message nesting deeper than \(Self.maxDepth) levels")
        }
        let type = try registry.type(named: message.typeName)
        let base = arena.allocate(type.size, alignment: 16)
        ProtobufC.initMessage(type.descriptor, base)
        var oneofOwners: [Int: String] = [:]
        for name in message.fields.keys.sorted() {
            guard let value = message.fields[name] else { continue }
            guard let f = type.fieldsByName[name] else {
                throw ProtoCodecError("\(type.name) has no field '\(name)'")
            }
            let member = base + f.offset
            switch f.presence {
            case .repeated:
                guard case .list(let items) = value else {
                    throw ProtoCodecError("\(type.name).\(name) is repeated: expected a list, got \(value.kindName)")
                }
                guard !items.isEmpty else { continue }
                let array = arena.allocate(items.count * f.kind.cSize, alignment: f.kind.cAlignment)
                for (i, item) in items.enumerated() {
                    try store(item, f, in: type, at: array + i * f.kind.cSize, depth: depth)
                }
                member.storeBytes(of: array, as: UnsafeMutableRawPointer.self)
                base.storeBytes(of: items.count, toByteOffset: f.quantifierOffset, as: Int.self)
            case .oneof:
                if let other = oneofOwners[f.quantifierOffset] {
                    throw ProtoCodecError("\(type.name): '\(other)' and '\(name)' are in the same oneof; set only one")
                }
                oneofOwners[f.quantifierOffset] = name
                try store(value, f, in: type, at: member, depth: depth)
                base.storeBytes(of: f.number, toByteOffset: f.quantifierOffset, as: UInt32.self)
            case .optional:
                try store(value, f, in: type, at: member, depth: depth)
                if f.kind != .string && f.kind != .message {
                    base.storeBytes(of: 1, toByteOffset: f.quantifierOffset, as: protobuf_c_boolean.self)
                }
            case .required, .implicit:
                try store(value, f, in: type, at: member, depth: depth)
            }
        }
        guard ProtobufC.check(base) else {
            throw ProtoCodecError("\(type.name): a required field is missing")
        }
        return base
    }

    private func store(_ value: ProtoValue, _ f: FieldInfo, in type: MessageType,
                       at p: UnsafeMutableRawPointer, depth: Int) throws {
        switch (f.kind, value) {
        case (.int32, .int32(let v)): p.storeBytes(of: v, as: Int32.self)
        case (.int64, .int64(let v)): p.storeBytes(of: v, as: Int64.self)
        case (.uint32, .uint32(let v)): p.storeBytes(of: v, as: UInt32.self)
        case (.uint64, .uint64(let v)): p.storeBytes(of: v, as: UInt64.self)
        case (.float, .float(let v)): p.storeBytes(of: v, as: Float.self)
        case (.double, .double(let v)): p.storeBytes(of: v, as: Double.self)
        case (.bool, .bool(let v)): p.storeBytes(of: v ? 1 : 0, as: protobuf_c_boolean.self)
        case (.enumValue, .enumValue(let v)): p.storeBytes(of: v, as: Int32.self)
        case (.string, .string(let s)):
            p.storeBytes(of: try cString(s, f, in: type), as: UnsafeMutableRawPointer.self)
        case (.bytes, .bytes(let b)):
            let data = arena.allocate(b.count, alignment: 1)
            b.withUnsafeBytes { if let src = $0.baseAddress { data.copyMemory(from: src, byteCount: $0.count) } }
            let binary = ProtobufCBinaryData(len: b.count, data: data.assumingMemoryBound(to: UInt8.self))
            p.storeBytes(of: binary, as: ProtobufCBinaryData.self)
        case (.message, .message(let m)):
            let expected = try registry.type(of: f).name
            guard m.typeName == expected else {
                throw ProtoCodecError("\(type.name).\(f.name) holds \(expected), not \(m.typeName)")
            }
            p.storeBytes(of: try build(m, depth: depth + 1), as: UnsafeMutableRawPointer.self)
        default:
            throw ProtoCodecError("\(type.name).\(f.name) is \(f.kind), cannot hold \(value.kindName)")
        }
    }

    private func cString(_ s: String, _ f: FieldInfo, in type: MessageType) throws -> UnsafeMutableRawPointer {
        let utf8 = Array(s.utf8)
        // protobuf-c strings are NUL-terminated: an embedded NUL would silently truncate the value.
        guard !utf8.contains(0) else {
            throw ProtoCodecError("\(type.name).\(f.name): strings with NUL characters are not supported")
        }
        let p = arena.allocate(utf8.count + 1, alignment: 1)
        utf8.withUnsafeBytes { if let src = $0.baseAddress { p.copyMemory(from: src, byteCount: $0.count) } }
        return p
    }
}
