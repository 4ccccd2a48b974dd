import GatewayABI
import Glibc
import HTTPClient
import ProtoCodec
import RPC

/// What a plugin's `pt_call *` stands for: the host functions that act on the call. In the
/// host it is a `PluginCall` (the request is performed here); in a plugin runner it is the
/// runner's stand-in, which forwards `http_request` and `log` to the host over the socket.
class PluginCallContext: @unchecked Sendable {
    /// Milliseconds left before the call's deadline (`Int64.max`: none).
    var remainingMs: Int64 { .max }

    /// `http_request`: an encoded `HttpRequest` in, a status and an encoded `HttpResponse` out.
    func httpRequest(_ encoded: [UInt8]) -> (status: Int32, response: [UInt8]) { (Int32(PT_ERR_INTERNAL), []) }

    /// `log`, with the level as the plugin gave it.
    func log(_ level: Int32, _ text: String) {}
}

/// The host's function table handed to every plugin (`pt_host_api`), and its C functions.
///
/// Every function is a non-capturing C callback that recovers its `PluginCallContext` from the
/// opaque `pt_call *` (an unretained `Unmanaged`: the host keeps the call alive until the plugin
/// function it was passed to returns), copies its arguments, and never unwinds into the plugin.
enum HostAPI {
    /// Allocated once and never freed: plugins may keep the pointer for the process lifetime.
    /// `nonisolated(unsafe)`: written only inside this initializer, read-only afterwards.
    nonisolated(unsafe) static let table: UnsafePointer<pt_host_api> = {
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
    static func handle(_ call: PluginCallContext) -> OpaquePointer {
        OpaquePointer(Unmanaged.passUnretained(call).toOpaque())
    }

    static func call(_ handle: OpaquePointer) -> PluginCallContext {
        Unmanaged<PluginCallContext>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    /// Requests larger than this are refused unsent (a plugin building a runaway body).
    static let maxRequestBytes = 4 << 20

    static func httpRequest(_ handle: OpaquePointer?, _ request: UnsafePointer<UInt8>?, _ length: Int,
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

    static func clientRequest(_ m: ProtoMessage) -> HTTPClientRequest {
        let headers: [HTTPClientHeader] = m.list("headers").compactMap {
            guard case .message(let h) = $0 else { return nil }
            return HTTPClientHeader(h.string("name"), h.string("value"))
        }
        let connect = Int(m.int32("connect_timeout_ms"))
        let total = Int(m.int32("timeout_ms"))
        let limit = m.int64("max_response_bytes")
        return HTTPClientRequest(method: m.string("method").isEmpty ? "GET" : m.string("method"), url: m.string("url"),
                           headers: headers, body: m.bytes("body"),
                           connectTimeoutMs: connect > 0 ? connect : nil, timeoutMs: total > 0 ? total : nil,
                           maxResponseBytes: limit > 0 ? Int(clamping: limit) : nil)
    }

    static func httpResponse(_ r: HTTPClientResult, _ redactor: Redactor) -> ProtoMessage {
        var m = ProtoMessage("pixtrack.v1.HttpResponse")
        if r.sent { m["sent"] = .bool(true) }
        if r.status != 0 { m["status"] = .int32(Int32(clamping: r.status)) }
        let headers: [ProtoValue] = r.headers.compactMap { h in
            // Header values reach the plugin as received, except NULs protobuf-c cannot carry.
            guard !h.name.contains("\0"), !h.value.contains("\0") else { return nil }
            return .message(ProtoMessage("pixtrack.v1.Header", ["name": .string(h.name), "value": .string(h.value)]))
        }
        if !headers.isEmpty { m["headers"] = .list(headers) }
        if !r.body.isEmpty { m["body"] = .bytes(r.body) }
        if let e = r.error { m["error"] = .enumValue(errorNumber(e)) }
        let message = redactor.redact(r.errorMessage).replacingOccurrences(of0: "\0")
        if !message.isEmpty { m["error_message"] = .string(message) }
        if r.elapsedMs != 0 { m["elapsed_ms"] = .int64(r.elapsedMs) }
        return m
    }

    /// `pixtrack.v1.HttpErrorKind` numbers.
    static func errorNumber(_ e: HTTPClientErrorKind) -> Int32 {
        switch e {
        case .invalidRequest: 1
        case .dns: 2
        case .connect: 3
        case .tls: 4
        case .timeout: 5
        case .send: 6
        case .receive: 7
        case .tooLarge: 8
        case .deadline: 9
        case .other: 10
        }
    }

    /// The host side of `http_request` (in-process calls, and the runner's HTTP frames): decode,
    /// perform under the call's deadline and policy, encode the redacted answer.
    static func perform(_ encoded: [UInt8], on call: PluginCall) -> (status: Int32, response: [UInt8]) {
        guard let message = try? ProtoCodec.decode(encoded, as: "pixtrack.v1.HttpRequest") else {
            return (Int32(PT_ERR_INVALID_ARGUMENT), [])
        }
        let result = call.perform(clientRequest(message), noSideEffects: message.bool("no_side_effects"))
        guard let response = try? ProtoCodec.encode(httpResponse(result, call.environment.redactor)) else {
            return (Int32(PT_ERR_INTERNAL), [])
        }
        return (Int32(PT_OK), response)
    }

    /// Longest log message kept from a plugin.
    static let maxLogBytes = 4096

    static func log(_ handle: OpaquePointer?, _ level: Int32, _ message: UnsafePointer<CChar>?) {
        guard let message else { return }
        let n = strnlen(message, maxLogBytes)
        let text = message.withMemoryRebound(to: UInt8.self, capacity: n) {
            String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
        }
        guard let handle else {
            logUnattributed(level, text)
            return
        }
        call(handle).log(level, text)
    }

    static func logLevel(_ level: Int32) -> Logger.Level {
        switch level {
        case Int32(PT_LOG_DEBUG): .debug
        case Int32(PT_LOG_WARNING): .warning
        case Int32(PT_LOG_ERROR): .error
        default: .info
        }
    }

    /// A line logged outside any call (no instance to attribute it to, nor its secrets).
    static func logUnattributed(_ level: Int32, _ text: String) {
        Logger(minimum: .info).log(logLevel(level), "plugin_log", [("plugin", "unattributed"),
                                                                  ("message", Redactor.redactQueryValues(in: text))])
    }

    /// A plugin's line, attributed to its instance and redacted with its secrets.
    static func log(_ level: Int32, _ text: String, environment env: InstanceEnvironment) {
        env.logger.log(logLevel(level), "plugin_log", [("plugin", env.pluginName), ("instance", env.label),
                                                       ("message", env.redactor.redact(text))])
    }
}

extension String {
    func replacingOccurrences(of0 ch: Character) -> String {
        contains(ch) ? String(filter { $0 != ch }) : self
    }
}
