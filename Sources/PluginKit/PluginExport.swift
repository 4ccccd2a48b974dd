import GatewayABI
import Glibc
import PixTrackMessages

/// Builds the C plugin table for a `GatewayPlugin` type. A plugin module exports its entry as:
///
/// ```swift
/// @_cdecl("pixtrack_gateway_entry")
/// public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
///     PluginExport.entry(MyGateway.self, host: host)
/// }
/// ```
///
/// The table is followed in memory by a pointer to the plugin type's factory, which the `create`
/// trampoline finds through the ABI's `self` argument: no global state, so any number of Swift
/// plugins coexist in one process.
public enum PluginExport {
    /// A plugin type, boxed so a raw pointer can reach it from C.
    final class Factory {
        let type: any GatewayPlugin.Type
        init(_ type: any GatewayPlugin.Type) { self.type = type }
    }

    /// One configured instance behind a `pt_instance *`, with the host table it was created by.
    final class InstanceBox {
        let plugin: any GatewayPlugin
        let host: UnsafePointer<pt_host_api>
        init(_ plugin: any GatewayPlugin, host: UnsafePointer<pt_host_api>) {
            self.plugin = plugin
            self.host = host
        }
    }

    /// Returns the plugin's table (allocated here, never freed), or nil when the host's ABI
    /// major differs from ours.
    public static func entry<P: GatewayPlugin>(_ type: P.Type, host: UnsafeRawPointer?) -> UnsafeRawPointer? {
        guard let host = host?.assumingMemoryBound(to: pt_host_api.self),
              host.pointee.abi_major == PT_GATEWAY_ABI_MAJOR,
              host.pointee.struct_size >= UInt32(MemoryLayout<pt_host_api>.size) else { return nil }
        let tableSize = MemoryLayout<pt_gateway_plugin>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: tableSize + MemoryLayout<UnsafeRawPointer>.size,
                                                   alignment: MemoryLayout<pt_gateway_plugin>.alignment)
        let table = raw.bindMemory(to: pt_gateway_plugin.self, capacity: 1)
        table.initialize(to: pt_gateway_plugin())
        table.pointee.struct_size = UInt32(MemoryLayout<pt_gateway_plugin>.size)
        table.pointee.abi_major = UInt16(PT_GATEWAY_ABI_MAJOR)
        table.pointee.abi_minor = UInt16(PT_GATEWAY_ABI_MINOR)
        table.pointee.name = UnsafePointer(strdup(P.name))
        table.pointee.version = UnsafePointer(strdup(P.version))
        table.pointee.description = UnsafePointer(strdup(P.summary))
        table.pointee.capabilities = P.capabilities.rawValue
        table.pointee.create = { this, host, call, config, length, out, error, capacity in
            PluginExport.create(this, host, call, config, length, out, error, capacity)
        }
        table.pointee.destroy = { instance in
            guard let instance else { return }
            Unmanaged<InstanceBox>.fromOpaque(UnsafeRawPointer(instance)).release()
        }
        table.pointee.create_pix = { instance, call, request, length, out, outLength, error, capacity in
            PluginExport.dispatch(.createPix, instance, call, request, length, out, outLength, error, capacity)
        }
        table.pointee.get_status = { instance, call, request, length, out, outLength, error, capacity in
            PluginExport.dispatch(.getStatus, instance, call, request, length, out, outLength, error, capacity)
        }
        table.pointee.parse_webhook = { instance, call, request, length, out, outLength, error, capacity in
            PluginExport.dispatch(.parseWebhook, instance, call, request, length, out, outLength, error, capacity)
        }
        table.pointee.free_buffer = { buffer, _ in free(buffer) }
        (raw + tableSize).storeBytes(of: Unmanaged.passRetained(Factory(P.self)).toOpaque(), as: UnsafeMutableRawPointer.self)
        return UnsafeRawPointer(table)
    }

    static func create(_ this: UnsafePointer<pt_gateway_plugin>?, _ host: UnsafePointer<pt_host_api>?, _ call: OpaquePointer?,
                       _ config: UnsafePointer<UInt8>?, _ length: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                       _ errorBuffer: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> Int32 {
        guard let this, let host, let out else { return fail(.invalidArgument("NULL argument"), errorBuffer, capacity) }
        let factoryPointer = (UnsafeRawPointer(this) + MemoryLayout<pt_gateway_plugin>.stride).load(as: UnsafeRawPointer.self)
        let factory = Unmanaged<Factory>.fromOpaque(factoryPointer).takeUnretainedValue()
        let bytes = length > 0 && config != nil ? Array(UnsafeBufferPointer(start: config, count: length)) : []
        guard let m = try? Pixtrack_V1_PluginConfig(serializedBytes: bytes) else {
            return fail(.invalidArgument("configuration does not decode as PluginConfig"), errorBuffer, capacity)
        }
        do {
            let plugin = try factory.type.init(config: PluginConfiguration(m), host: HostCall(host: host, call: call))
            out.pointee = OpaquePointer(Unmanaged.passRetained(InstanceBox(plugin, host: host)).toOpaque())
            return Int32(PT_OK)
        } catch {
            return fail(error, errorBuffer, capacity)
        }
    }

    enum Operation { case createPix, getStatus, parseWebhook }

    static func dispatch(_ op: Operation, _ instance: OpaquePointer?, _ call: OpaquePointer?,
                         _ request: UnsafePointer<UInt8>?, _ length: Int,
                         _ out: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ outLength: UnsafeMutablePointer<Int>?,
                         _ errorBuffer: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> Int32 {
        guard let instance, let out, let outLength else { return fail(.invalidArgument("NULL argument"), errorBuffer, capacity) }
        out.pointee = nil
        outLength.pointee = 0
        let box = Unmanaged<InstanceBox>.fromOpaque(UnsafeRawPointer(instance)).takeUnretainedValue()
        let plugin = box.plugin
        let hostCall = HostCall(host: box.host, call: call)
        let bytes = length > 0 && request != nil ? Array(UnsafeBufferPointer(start: request, count: length)) : []
        let result: [UInt8]?
        do {
            switch op {
            case .createPix:
                let pix = try plugin.createPix(PixRequest(decode(bytes, as: Pixtrack_V1_CreatePixRequest.self)), host: hostCall)
                if let raw = pix.rawOverride { return misbehave(raw, out, outLength) }
                result = try? pix.wire.serializedBytes()
            case .getStatus:
                let status = try plugin.getStatus(StatusRequest(decode(bytes, as: Pixtrack_V1_GetStatusRequest.self)), host: hostCall)
                result = try? status.wire.serializedBytes()
            case .parseWebhook:
                let hook = try plugin.parseWebhook(WebhookPayload(decode(bytes, as: Pixtrack_V1_ParseWebhookRequest.self)), host: hostCall)
                // The host refuses a result with a longer id as garbage (retried for ever, then
                // parked): a body that carries one is the body's fault, answered 400.
                if let problem = hook.overlongID { return fail(.invalidArgument(problem), errorBuffer, capacity) }
                result = try? hook.wire.serializedBytes()
            }
        } catch {
            return fail(error, errorBuffer, capacity)
        }
        guard let encoded = result else {
            return fail(.internal("result could not be encoded"), errorBuffer, capacity)
        }
        guard let buffer = malloc(max(encoded.count, 1))?.assumingMemoryBound(to: UInt8.self) else {
            return fail(.internal("out of memory"), errorBuffer, capacity)
        }
        encoded.withUnsafeBufferPointer { if let b = $0.baseAddress { buffer.update(from: b, count: $0.count) } }
        out.pointee = buffer
        outLength.pointee = encoded.count
        return Int32(PT_OK)
    }

    private static func misbehave(_ raw: PixResult.RawOverride, _ out: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>,
                                  _ outLength: UnsafeMutablePointer<Int>) -> Int32 {
        switch raw {
        case .null:
            break
        case .bytes(let b):
            let buffer = malloc(max(b.count, 1))!.assumingMemoryBound(to: UInt8.self)
            b.withUnsafeBufferPointer { if let s = $0.baseAddress { buffer.update(from: s, count: $0.count) } }
            out.pointee = buffer
            outLength.pointee = b.count
        case .huge(let n):
            guard let buffer = malloc(max(n, 1))?.assumingMemoryBound(to: UInt8.self) else { break }
            buffer.initialize(repeating: 0xFF, count: max(n, 1))
            out.pointee = buffer
            outLength.pointee = n
        }
        return Int32(PT_OK)
    }

    private static func decode<M: GeneratedMessage>(_ bytes: [UInt8], as type: M.Type) throws(PluginError) -> M {
        do {
            return try M(serializedBytes: bytes)
        } catch {
            throw .invalidArgument("request does not decode as \(M.protoMessageName.dropFirst("pixtrack.v1.".count))")
        }
    }

    private static func fail(_ e: PluginError, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> Int32 {
        writeMessage(e.message, buffer, capacity)
        return e.code
    }

    /// Copies `message` (cut to fit, NUL-terminated) into the host's error buffer.
    static func writeMessage(_ message: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int) {
        guard let buffer, capacity > 0 else { return }
        let bytes = Array(message.utf8.prefix(capacity - 1))
        bytes.withUnsafeBufferPointer { src in
            buffer.withMemoryRebound(to: UInt8.self, capacity: capacity) { dst in
                if let s = src.baseAddress { dst.update(from: s, count: src.count) }
                dst[src.count] = 0
            }
        }
    }
}
