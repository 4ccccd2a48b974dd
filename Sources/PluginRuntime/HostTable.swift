import GatewayABI
import Glibc
import RPC
import Synchronization

/// What a plugin's `pt_call *` stands for: the host functions that act on the call. In the
/// host it is a `PluginCall` (the request is performed here); in a plugin runner it is the
/// runner's stand-in, which forwards `http_request` and `log` to the host over the socket.
open class PluginCallContext: @unchecked Sendable {
    public init() {}

    /// Milliseconds left before the call's deadline (`Int64.max`: none).
    open var remainingMs: Int64 { .max }

    /// `http_request`: an encoded `HttpRequest` in, a status and an encoded `HttpResponse` out.
    open func httpRequest(_ encoded: [UInt8]) -> (status: Int32, response: [UInt8]) { (Int32(PT_ERR_INTERNAL), []) }

    /// `log`, with the level as the plugin gave it.
    open func log(_ level: Int32, _ text: String) {}
}

/// The host's function table handed to every plugin (`pt_host_api`), and its C functions.
///
/// Every function is a non-capturing C callback that recovers its `PluginCallContext` from the
/// opaque `pt_call *` (an unretained `Unmanaged`: the host keeps the call alive until the plugin
/// function it was passed to returns), copies its arguments, and never unwinds into the plugin.
package enum HostAPI {
    /// Allocated once and never freed: plugins may keep the pointer for the process lifetime.
    /// `nonisolated(unsafe)`: written only inside this initializer, read-only afterwards.
    package nonisolated(unsafe) static let table: UnsafePointer<pt_host_api> = {
        let t = UnsafeMutablePointer<pt_host_api>.allocate(capacity: 1)
        t.initialize(to: pt_host_api())
        t.pointee.struct_size = UInt32(MemoryLayout<pt_host_api>.size)
        t.pointee.abi_major = UInt16(PT_GATEWAY_ABI_MAJOR)
        t.pointee.abi_minor = UInt16(PT_GATEWAY_ABI_MINOR)
        t.pointee.http_request = { call, request, length, out, outLength in
            HostAPI.httpRequest(call, request, length, out, outLength)
        }
        t.pointee.free_buffer = { buffer, _ in free(buffer) }
        t.pointee.log = { call, level, message in HostAPI.log(call, level, message) }
        t.pointee.now_unix_ms = { Clock.unixMs() }
        t.pointee.monotonic_ms = { Clock.monotonicMs() }
        t.pointee.remaining_ms = { call in
            guard let call else { return .max }
            return HostAPI.call(call).remainingMs
        }
        return UnsafePointer(t)
    }()

    /// The opaque handle for `call`, valid while the host holds `call`.
    package static func handle(_ call: PluginCallContext) -> OpaquePointer {
        OpaquePointer(Unmanaged.passUnretained(call).toOpaque())
    }

    package static func call(_ handle: OpaquePointer) -> PluginCallContext {
        Unmanaged<PluginCallContext>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    /// Requests larger than this are refused unsent (a plugin building a runaway body).
    package static let maxRequestBytes = 4 << 20

    package static func httpRequest(_ handle: OpaquePointer?, _ request: UnsafePointer<UInt8>?, _ length: Int,
                            _ out: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
                            _ outLength: UnsafeMutablePointer<Int>?) -> Int32 {
        guard let handle, let out, let outLength, length >= 0, length <= maxRequestBytes else {
            return Int32(PT_ERR_INVALID_ARGUMENT)
        }
        out.pointee = nil
        outLength.pointee = 0
        let bytes = length == 0 || request == nil ? [] : Array(UnsafeBufferPointer(start: request, count: length))
        let (status, encoded) = call(handle).httpRequest(bytes)
        guard status == PT_OK else { return status }
        let buffer = malloc(max(encoded.count, 1))!.assumingMemoryBound(to: UInt8.self)
        encoded.withUnsafeBufferPointer { if let b = $0.baseAddress { buffer.update(from: b, count: $0.count) } }
        out.pointee = buffer
        outLength.pointee = encoded.count
        return Int32(PT_OK)
    }

    /// Longest log message kept from a plugin.
    package static let maxLogBytes = 4096

    package static func log(_ handle: OpaquePointer?, _ level: Int32, _ message: UnsafePointer<CChar>?) {
        guard let message else { return }
        let n = strnlen(message, maxLogBytes)
        let text = message.withMemoryRebound(to: UInt8.self, capacity: n) {
            String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
        }
        guard let handle else {
            unattributed.withLock { $0 }(level, text)
            return
        }
        call(handle).log(level, text)
    }

    package static func logLevel(_ level: Int32) -> Logger.Level {
        switch level {
        case Int32(PT_LOG_DEBUG): .debug
        case Int32(PT_LOG_WARNING): .warning
        case Int32(PT_LOG_ERROR): .error
        default: .info
        }
    }

    /// Where a line logged outside any call goes: the host logs it (redacted); a runner sends it to
    /// its host. Set once at start-up.
    package static let unattributed = Mutex<@Sendable (Int32, String) -> Void>({ _, _ in })
}
