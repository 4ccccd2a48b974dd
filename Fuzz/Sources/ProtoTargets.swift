import ProtoCodec

/// The message types the proto targets decode, picked by an input's first byte: every
/// service's request types first (what clients send), then every other compiled type (plugin
/// results, reflection, descriptor.proto). `pixtrack-fuzz types` prints the table.
enum ProtoTypes {
    static let all: [String] = {
        var seen = Set<String>()
        var out: [String] = []
        for service in ProtoSchema.services {
            for method in service.methods where seen.insert(method.inputType).inserted { out.append(method.inputType) }
        }
        for name in ProtoSchema.messageTypeNames() where seen.insert(name).inserted { out.append(name) }
        return out
    }()

    static func pick(_ control: UInt8) -> String { all[Int(control) % all.count] }

    /// The control byte that picks `name`.
    static func control(for name: String) -> UInt8? { all.firstIndex(of: name).map { UInt8($0) } }
}

/// `proto`: `ProtoCodec.decode` (protobuf-c under our nesting check, then the copy into Swift
/// values) of arbitrary bytes as any message type.
///
/// Input: a type byte (`ProtoTypes`), then wire bytes. Invariants for what decodes: it encodes
/// again, and decoding that gives the same message and the same bytes (decode∘encode is the
/// identity); its proto3 JSON decodes and re-encodes to the same JSON.
let protoTarget = FuzzTarget(name: "proto", summary: "ProtoCodec.decode of any message type; binary and JSON round trips",
                             maxLength: 4096) {
    { bytes in
        guard let message = decodeInput(bytes, ProtoCodec.decode) else { return }
        let type = message.typeName
        let wire = encodes(message, "decoded from the wire")
        let again: ProtoMessage
        do { again = try ProtoCodec.decode(wire, as: type) } catch {
            require(false, "\(type) re-encoded from a decoded message does not decode: \(error)")
            return
        }
        require(sameMessage(again, message), "\(type): decode(encode(m)) != m: \(brief(message)) became \(brief(again))")
        require(encodes(again, "decoded twice") == wire, "\(type): encoding is not stable")
        checkJSONRoundTrip(message)
    }
}

/// `proto-json`: `ProtoJSON.decode` (ProtoCodec's own JSON parser and the proto3 JSON mapping)
/// of arbitrary text as any message type.
///
/// Input: a type byte (`ProtoTypes`), then JSON text. Invariants for what decodes: its binary
/// encoding decodes to the same message (as `ProtoJSON.decode` documents; not for a string
/// holding U+0000, protobuf-c's limit, nor a proto2 message missing a required field); its JSON
/// decodes to the same message again.
let protoJSONTarget = FuzzTarget(name: "proto-json", summary: "ProtoJSON.decode (proto3 JSON) of any message type; round trips",
                                 maxLength: 4096) {
    { bytes in
        guard let message = decodeInput(bytes, ProtoJSON.decode) else { return }
        let type = message.typeName
        do {
            let wire = try ProtoCodec.encode(message)
            let decoded = try ProtoCodec.decode(wire, as: type)
            require(sameMessage(decoded, message), "\(type): ProtoCodec.decode(ProtoCodec.encode(m)) != m for m from JSON: \(brief(message)) became \(brief(decoded))")
        } catch {
            // Two limits of the wire format, not of JSON: protobuf-c strings end at U+0000, and a
            // proto2 `required` field (descriptor.proto only) must be set to encode, while JSON
            // decoding accepts `{}` for every type.
            let known = "\(error)".contains("NUL") || "\(error)".contains("a required field is missing")
            require(known, "\(type) decoded from JSON does not round-trip through the wire format: \(error)")
        }
        if let back = checkJSONRoundTrip(message) {
            require(sameMessage(back, message), "\(type): ProtoJSON.decode(ProtoJSON.encode(m)) != m: \(brief(message)) became \(brief(back))")
        }
    }
}

/// The type byte picks the type, `decode` reads the rest as one (nil when it refuses).
private func decodeInput(_ bytes: UnsafeRawBufferPointer, _ decode: ([UInt8], String) throws -> ProtoMessage) -> ProtoMessage? {
    var input = FuzzInput(bytes)
    let type = ProtoTypes.pick(input.byte())
    do {
        let message = try decode(input.restArray, type)
        trace("\(type): \(message.fields.count) fields set")
        return message
    } catch {
        trace("\(type): \(error)")
        return nil
    }
}

/// Encodes `message`, which must succeed (it was decoded).
private func encodes(_ message: ProtoMessage, _ origin: String) -> [UInt8] {
    do { return try ProtoCodec.encode(message) } catch {
        require(false, "\(message.typeName) \(origin) does not encode: \(error)")
        return []
    }
}

/// Proto3 JSON of `message` decodes, and renders to the same JSON. Returns what it decoded to
/// (nil when it nests deeper than the JSON parser's 64 levels: messages may nest 100 deep on
/// the wire).
@discardableResult
private func checkJSONRoundTrip(_ message: ProtoMessage) -> ProtoMessage? {
    let json: [UInt8]
    do { json = try ProtoJSON.encode(message) } catch {
        require(false, "\(message.typeName) does not render as proto3 JSON: \(error)")
        return nil
    }
    do {
        let back = try ProtoJSON.decode(json, as: message.typeName)
        let again = try ProtoJSON.encode(back)
        require(again == json, "\(message.typeName): JSON round trip changed \(String(decoding: json.prefix(300), as: UTF8.self)) into \(String(decoding: again.prefix(300), as: UTF8.self))")
        return back
    } catch {
        require("\(error)".contains("nesting deeper"), "\(message.typeName): our own JSON does not decode: \(error) in \(String(decoding: json.prefix(300), as: UTF8.self))")
        return nil
    }
}

/// A message's fields for a failure message.
private func brief(_ m: ProtoMessage) -> String {
    String(m.fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ").prefix(600))
}

/// Equality that tells floats apart by their bits (NaN equals itself, -0 differs from 0) and
/// strings by their UTF-8 bytes (not by canonical equivalence, as String's == does).
func sameMessage(_ a: ProtoMessage, _ b: ProtoMessage) -> Bool {
    a.typeName == b.typeName && a.fields.count == b.fields.count
        && a.fields.allSatisfy { name, value in b.fields[name].map { sameValue(value, $0) } ?? false }
}

private func sameValue(_ a: ProtoValue, _ b: ProtoValue) -> Bool {
    switch (a, b) {
    case (.float(let x), .float(let y)): x.bitPattern == y.bitPattern
    case (.double(let x), .double(let y)): x.bitPattern == y.bitPattern
    case (.string(let x), .string(let y)): x.utf8.elementsEqual(y.utf8)
    case (.message(let x), .message(let y)): sameMessage(x, y)
    case (.list(let x), .list(let y)): x.count == y.count && zip(x, y).allSatisfy { sameValue($0, $1) }
    default: a == b
    }
}
