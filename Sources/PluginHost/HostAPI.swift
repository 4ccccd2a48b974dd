import GatewayABI
import Glibc
import HTTPClient
import PixTrackMessages
import PluginRuntime
import RPC

/// The host side of the plugins' host functions: HTTP performed here, log lines attributed and
/// redacted here (the table and its C callbacks are `PluginRuntime`'s `HostAPI`).
extension HostAPI {
    static func clientRequest(_ m: Pixtrack_V1_HttpRequest) -> HTTPClientRequest {
        let headers = m.headers.map { HTTPClientHeader($0.name, $0.value) }
        let connect = Int(m.connectTimeoutMs)
        let total = Int(m.timeoutMs)
        let limit = m.maxResponseBytes
        return HTTPClientRequest(method: m.method.isEmpty ? "GET" : m.method, url: m.url,
                           headers: headers, body: m.body,
                           connectTimeoutMs: connect > 0 ? connect : nil, timeoutMs: total > 0 ? total : nil,
                           maxResponseBytes: limit > 0 ? Int(clamping: limit) : nil)
    }

    static func httpResponse(_ r: HTTPClientResult, _ redactor: Redactor) -> Pixtrack_V1_HttpResponse {
        var m = Pixtrack_V1_HttpResponse()
        m.sent = r.sent
        m.status = Int32(clamping: r.status)
        m.headers = r.headers.compactMap { h in
            // Header values reach the plugin as received, except NULs protobuf-c cannot carry.
            guard !h.name.contains("\0"), !h.value.contains("\0") else { return nil }
            var header = Pixtrack_V1_Header()
            header.name = h.name
            header.value = h.value
            return header
        }
        m.body = r.body
        if let e = r.error { m.error = Pixtrack_V1_HttpErrorKind(rawValue: errorNumber(e)) }
        m.errorMessage = redactor.redact(r.errorMessage).replacingOccurrences(of0: "\0")
        m.elapsedMs = r.elapsedMs
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
        guard let message = try? Pixtrack_V1_HttpRequest(serializedBytes: encoded) else {
            return (Int32(PT_ERR_INVALID_ARGUMENT), [])
        }
        let result = call.perform(clientRequest(message), noSideEffects: message.noSideEffects)
        guard let response = try? httpResponse(result, call.environment.redactor).serializedBytes() else {
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
