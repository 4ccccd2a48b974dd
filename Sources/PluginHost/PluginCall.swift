import Glibc
import BRCode
import HTTPClient
import RPC
import Synchronization

/// Everything a call needs from its instance that host functions use: identity, logging,
/// redaction and HTTP policy. Immutable, shared by all calls of one instance.
final class InstanceEnvironment: Sendable {
    let pluginName: String
    let label: String
    let logger: Logger
    let redactor: Redactor
    let http: HTTPClient

    init(pluginName: String, label: String, logger: Logger, redactor: Redactor, http: HTTPClient) {
        self.pluginName = pluginName
        self.label = label
        self.logger = logger
        self.redactor = redactor
        self.http = http
    }
}

/// One plugin call in progress: the object behind the ABI's opaque `pt_call *`.
///
/// It records whether any HTTP request left during the call (what lets the host turn a plugin
/// failure into NOT_SENT safely) and closes at the call's end or deadline, after which the
/// plugin's requests are refused unsent.
final class PluginCall: PluginCallContext, @unchecked Sendable {
    let environment: InstanceEnvironment
    /// Monotonic milliseconds; `Int64.max` for none.
    let deadlineMs: Int64
    let operation: String

    private struct State {
        var closed = false
        var inFlight = 0
        var sentAny = false
        var requests = 0
    }

    private let state = Mutex(State())

    init(environment: InstanceEnvironment, operation: String, timeoutMs: Int64) {
        self.environment = environment
        self.operation = operation
        self.deadlineMs = timeoutMs == .max ? .max : Clock.monotonicMs() + timeoutMs
    }

    override public var remainingMs: Int64 {
        deadlineMs == .max ? .max : max(0, deadlineMs - Clock.monotonicMs())
    }

    override public func httpRequest(_ encoded: [UInt8]) -> (status: Int32, response: [UInt8]) {
        HostAPI.perform(encoded, on: self)
    }

    override public func log(_ level: Int32, _ text: String) {
        HostAPI.log(level, text, environment: environment)
    }

    /// True when some request may have reached a server during this call (or is still going).
    var mayHaveSent: Bool { state.withLock { $0.sentAny || $0.inFlight > 0 } }

    var requestCount: Int { state.withLock { $0.requests } }

    /// Ends the call: later `http_request`s through it are refused without being sent.
    func close() { state.withLock { $0.closed = true } }

    /// Performs one request for the plugin, within the call's deadline.
    /// `noSideEffects`: the plugin declared the request cannot create or change a charge, so it
    /// does not count as "sent" for NOT_SENT decisions.
    func perform(_ request: HTTPClientRequest, noSideEffects: Bool = false) -> HTTPClientResult {
        // Webhooks are parsed from the body alone, inline with the gateway's POST and again on
        // each retry: a body must never make the host send anything (pixtrack_gateway.h, WEBHOOKS).
        guard operation != GatewayInstance.Operation.parseWebhook.rawValue else {
            return .notSent(.invalidRequest, "parse_webhook may not make HTTP requests (webhooks are parsed from the body alone)")
        }
        let remaining = remainingMs
        let admitted: Bool = state.withLock { s in
            guard !s.closed, remaining > 0 else { return false }
            if !noSideEffects { s.inFlight += 1 }
            s.requests += 1
            return true
        }
        guard admitted else {
            return .notSent(.deadline, "the \(operation) call is over or past its deadline")
        }
        var capped = request
        let cap = remaining == .max ? Int.max : Int(remaining)
        capped.timeoutMs = min(request.timeoutMs ?? environment.http.configuration.timeoutMs, cap)
        capped.connectTimeoutMs = min(request.connectTimeoutMs ?? environment.http.configuration.connectTimeoutMs, cap)
        let limit = environment.http.configuration.maxResponseBytes
        capped.maxResponseBytes = min(request.maxResponseBytes ?? limit, limit)
        let result = environment.http.execute(capped)
        if !noSideEffects {
            state.withLock { s in
                s.inFlight -= 1
                if result.sent { s.sentAny = true }
            }
        }
        let url = environment.redactor.redact(request.url)
        if let error = result.error {
            environment.logger.warning("plugin_http_failed", ("plugin", environment.pluginName),
                                       ("instance", environment.label), ("method", request.method), ("url", url),
                                       ("error", error.rawValue), ("sent", String(result.sent)),
                                       ("detail", environment.redactor.redact(result.errorMessage)),
                                       ("elapsed_ms", String(result.elapsedMs)))
        } else {
            environment.logger.debug("plugin_http", ("plugin", environment.pluginName), ("instance", environment.label),
                                     ("method", request.method), ("url", url), ("status", String(result.status)),
                                     ("elapsed_ms", String(result.elapsedMs)))
        }
        return result
    }
}
