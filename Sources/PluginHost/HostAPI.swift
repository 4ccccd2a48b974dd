import GatewayABI
import Glibc
import HTTPClient
import PluginRuntime
import ProtoCodec
import RPC

/// The host side of the plugins' host functions: HTTP performed here, log lines attributed and
/// redacted here (the table and its C callbacks are `PluginRuntime`'s `HostAPI`).
extension HostAPI {
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
