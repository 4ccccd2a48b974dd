internal import CProtobufC
internal import PixTrackProto

/// Every raw protobuf-c and PixTrackProto call of the codec, one line each.
///
/// Invariant for all of them: descriptor pointers come from `PixTrackProto`'s static tables
/// (never freed, never written), and message pointers are either owned by the caller's arena or
/// were returned by `unpack` and are freed exactly once by `freeUnpacked`.
enum ProtobufC {
    typealias Descriptor = UnsafePointer<ProtobufCMessageDescriptor>

    /// Parses wire bytes into a heap message, `nil` when the bytes are not a valid `descriptor`.
    /// The corresponding C function is `protobuf_c_message_unpack` (default malloc allocator).
    static func unpack(_ descriptor: Descriptor, _ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(protobuf_c_message_unpack(descriptor, nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)))
    }

    /// The corresponding C function is `protobuf_c_message_free_unpacked`.
    static func freeUnpacked(_ message: UnsafeMutableRawPointer) {
        protobuf_c_message_free_unpacked(message.assumingMemoryBound(to: ProtobufCMessage.self), nil)
    }

    /// Sets the descriptor and every default. The corresponding C function is
    /// `protobuf_c_message_init` (which calls the descriptor's `message_init`).
    static func initMessage(_ descriptor: Descriptor, _ memory: UnsafeMutableRawPointer) {
        protobuf_c_message_init(descriptor, memory)
    }

    /// False when a required (proto2) field is missing. The corresponding C function is
    /// `protobuf_c_message_check`.
    static func check(_ message: UnsafeRawPointer) -> Bool {
        protobuf_c_message_check(message.assumingMemoryBound(to: ProtobufCMessage.self)) != 0
    }

    /// The corresponding C function is `protobuf_c_message_get_packed_size`.
    static func packedSize(_ message: UnsafeRawPointer) -> Int {
        protobuf_c_message_get_packed_size(message.assumingMemoryBound(to: ProtobufCMessage.self))
    }

    /// Writes exactly `packedSize` bytes. The corresponding C function is `protobuf_c_message_pack`.
    static func pack(_ message: UnsafeRawPointer, into out: UnsafeMutablePointer<UInt8>) -> Int {
        protobuf_c_message_pack(message.assumingMemoryBound(to: ProtobufCMessage.self), out)
    }

    /// The corresponding C function is `pt_message_descriptors` (generated registry).
    static func messageDescriptors() -> [Descriptor] {
        var count = 0
        guard let list = pt_message_descriptors(&count) else { return [] }
        return (0..<count).compactMap { list[$0] }
    }

    /// Copies every service descriptor out. The corresponding C function is
    /// `pt_service_descriptors` (generated registry).
    static func services() -> [ProtoServiceInfo] {
        var count = 0
        guard let list = pt_service_descriptors(&count) else { return [] }
        return (0..<count).compactMap { list[$0]?.pointee }.map { s in
            ProtoServiceInfo(name: String(cString: s.name), methods: (0..<Int(s.n_methods)).map { i in
                let m = s.methods[i]
                return ProtoMethodInfo(name: String(cString: m.name), inputType: String(cString: m.input.pointee.name),
                                       outputType: String(cString: m.output.pointee.name))
            })
        }
    }

    /// The corresponding C functions are `pt_descriptor_set_bytes` / `pt_descriptor_set_size`.
    static func descriptorSet() -> [UInt8] {
        guard let bytes = pt_descriptor_set_bytes() else { return [] }
        return Array(UnsafeBufferPointer(start: bytes, count: pt_descriptor_set_size()))
    }
}
