internal import CProtobufC

/// Copies a message that protobuf-c unpacked into a `ProtoMessage`, walking the C struct by the
/// offsets in its field descriptors. Reads only; the caller frees the C message.
struct ProtoDecoder {
    let registry: ProtoRegistry

    func read(_ base: UnsafeRawPointer, as type: MessageType) throws -> ProtoMessage {
        var fields: [String: ProtoValue] = [:]
        for f in type.fields {
            let member = base + f.offset
            switch f.presence {
            case .repeated:
                let count = base.load(fromByteOffset: f.quantifierOffset, as: Int.self)
                guard count > 0, let array = member.load(as: UnsafeRawPointer?.self) else { continue }
                var items: [ProtoValue] = []
                items.reserveCapacity(count)
                for i in 0..<count {
                    items.append(try value(array + i * f.kind.cSize, f))
                }
                fields[f.name] = .list(items)
            case .oneof:
                if base.load(fromByteOffset: f.quantifierOffset, as: UInt32.self) == f.number {
                    fields[f.name] = try value(member, f)
                }
            case .optional:
                if isPresentOptional(base, member, f) { fields[f.name] = try value(member, f) }
            case .required:
                fields[f.name] = try value(member, f)
            case .implicit:
                if !isDefault(member, f) { fields[f.name] = try value(member, f) }
            }
        }
        return ProtoMessage(type.name, fields)
    }

    private func isPresentOptional(_ base: UnsafeRawPointer, _ member: UnsafeRawPointer, _ f: FieldInfo) -> Bool {
        switch f.kind {
        case .string, .message:
            // protobuf-c has no has_ flag for these: a NULL or default pointer means unset.
            guard let p = member.load(as: UnsafeRawPointer?.self) else { return false }
            return p != f.defaultValue
        default:
            return base.load(fromByteOffset: f.quantifierOffset, as: protobuf_c_boolean.self) != 0
        }
    }

    /// Mirrors protobuf-c's "zeroish" test, which decides what proto3 omits on the wire (floats
    /// compare with 0: a -0.0 another encoder sent is unset, as protobuf-c would never write it).
    private func isDefault(_ member: UnsafeRawPointer, _ f: FieldInfo) -> Bool {
        switch f.kind {
        case .int32, .uint32, .enumValue: return member.load(as: UInt32.self) == 0
        case .int64, .uint64: return member.load(as: UInt64.self) == 0
        case .float: return member.load(as: Float.self) == 0
        case .double: return member.load(as: Double.self) == 0
        case .bool: return member.load(as: protobuf_c_boolean.self) == 0
        case .string:
            guard let p = member.load(as: UnsafePointer<CChar>?.self) else { return true }
            return p.pointee == 0
        case .bytes: return member.load(as: ProtobufCBinaryData.self).len == 0
        case .message: return member.load(as: UnsafeRawPointer?.self) == nil
        }
    }

    private func value(_ member: UnsafeRawPointer, _ f: FieldInfo) throws -> ProtoValue {
        switch f.kind {
        case .int32: return .int32(member.load(as: Int32.self))
        case .int64: return .int64(member.load(as: Int64.self))
        case .uint32: return .uint32(member.load(as: UInt32.self))
        case .uint64: return .uint64(member.load(as: UInt64.self))
        case .float: return .float(member.load(as: Float.self))
        case .double: return .double(member.load(as: Double.self))
        case .bool: return .bool(member.load(as: protobuf_c_boolean.self) != 0)
        case .enumValue: return .enumValue(member.load(as: Int32.self))
        case .string:
            guard let p = member.load(as: UnsafePointer<CChar>?.self) else { return .string("") }
            guard let s = String(validatingCString: p) else {
                throw ProtoCodecError("field '\(f.name)': string is not valid UTF-8")
            }
            return .string(s)
        case .bytes:
            let b = member.load(as: ProtobufCBinaryData.self)
            guard b.len > 0, let data = b.data else { return .bytes([]) }
            return .bytes(Array(UnsafeBufferPointer(start: data, count: b.len)))
        case .message:
            guard let p = member.load(as: UnsafeRawPointer?.self) else {
                throw ProtoCodecError("field '\(f.name)': NULL message")
            }
            return .message(try read(p, as: try registry.type(of: f)))
        }
    }
}
