import BRCode
import GatewayABI
import PixTrackMessages
import RPC

/// Owns one `pt_instance *` and destroys it when the last reference goes, which is after every
/// call on it has returned (each running call holds a reference, even one the host abandoned).
///
/// `@unchecked Sendable`: the pointer is only passed to the plugin, whose instances must be
/// thread-safe (ABI rule); `destroy` runs exactly once, from `deinit`.
final class InstanceHandle: @unchecked Sendable {
    let plugin: LoadedPlugin
    let instance: OpaquePointer

    init(plugin: LoadedPlugin, instance: OpaquePointer) {
        self.plugin = plugin
        self.instance = instance
    }

    deinit { plugin.table!.pointee.destroy(instance) }
}

/// Where an instance lives: in this process, or in its plugin's runner process.
enum InstanceBackend: Sendable {
    case local(InstanceHandle)
    case remote(RemoteInstance)
}

/// One configured gateway account: a plugin instance created from a `GatewayConfig`.
///
/// Every call runs on a host thread reserved for plugins (never the cooperative pool) under the
/// host timeout. The results are Swift values; the host decides UNKNOWN for anything it cannot
/// trust (overrun, garbage, NULL, oversized, inconsistent) and NOT_SENT only when it knows no
/// request left. Safe to call concurrently.
public final class GatewayInstance: Sendable {
    public let plugin: PluginInfo
    /// Free text naming the account in logs (e.g. `"bot 12 / atomopay"`).
    public let label: String
    let backend: InstanceBackend
    let environment: InstanceEnvironment
    let threads: PluginThreads
    /// Host deadline for each call, in milliseconds.
    public let timeoutMs: Int64

    init(plugin: PluginInfo, backend: InstanceBackend, environment: InstanceEnvironment, threads: PluginThreads, timeoutMs: Int64) {
        self.plugin = plugin
        self.label = environment.label
        self.backend = backend
        self.environment = environment
        self.threads = threads
        self.timeoutMs = timeoutMs
    }

    // MARK: - Calls

    /// Issues a PIX charge. Never throws: every failure is an outcome (see `CreateOutcome`).
    public func createPix(_ request: CreatePixRequest) async -> CreatePixOutcome {
        let started = Clock.monotonicMs()
        var outcome = await createPixUntimed(request)
        outcome.elapsedMs = Clock.monotonicMs() - started
        if let f = outcome.failure {
            environment.logger.warning("plugin_create_pix_unsettled", ("plugin", plugin.name), ("instance", label),
                                       ("reference", request.reference), ("outcome", outcome.outcome.rawValue),
                                       ("failure", f.kind.rawValue), ("detail", environment.redactor.redact(f.message)))
        }
        return outcome
    }

    private func createPixUntimed(_ request: CreatePixRequest) async -> CreatePixOutcome {
        guard let bytes = try? GatewayProto.createRequest(request).serializedBytes() else {
            return CreatePixOutcome(outcome: .notSent, failure: GatewayCallFailure(.pluginError, "request could not be encoded (NUL in a string?)"))
        }
        let (completion, call) = await invoke(.createPix, bytes)
        let raw: RawResult
        switch completion {
        case .busy:
            return CreatePixOutcome(outcome: .notSent, failure: GatewayCallFailure(.busy, "too many plugin calls running; this one never started"))
        case .timedOut:
            return CreatePixOutcome(outcome: .unknown, failure: GatewayCallFailure(.timeout, "plugin did not answer within \(timeoutMs) ms"))
        case .finished(let r):
            raw = r
        }
        if let lost = raw.lost {
            // Held back (never sent to the plugin): nothing left. Died during the call: the
            // plugin may have had a charge created by then, so the reconciler settles it.
            return CreatePixOutcome(outcome: lost.started ? .unknown : .notSent, failure: GatewayCallFailure(.crashed, lost.reason))
        }
        guard raw.status == PT_OK else {
            // A clean error status: nothing can have reached the gateway unless the host sent it.
            let sent = call.mayHaveSent
            return CreatePixOutcome(outcome: sent ? .unknown : .notSent,
                                    failure: GatewayCallFailure(.pluginError, code: raw.status, raw.message.isEmpty ? "plugin error" : raw.message))
        }
        guard let m = decodeResult(raw, as: Pixtrack_V1_CreatePixResult.self) else {
            return CreatePixOutcome(outcome: .unknown, failure: GatewayCallFailure(.invalidResult, raw.problem ?? "result does not decode as CreatePixResult"))
        }
        if let problem = GatewayProto.overlongID(("transaction_id", m.transactionId), ("gateway_hash", m.gatewayHash)) {
            return CreatePixOutcome(outcome: .unknown, failure: GatewayCallFailure(.invalidResult, problem))
        }
        var out = CreatePixOutcome(outcome: .unknown)
        out.transactionID = GatewayProto.text(m.transactionId, limit: GatewayProto.maxID)
        out.gatewayHash = GatewayProto.text(m.gatewayHash, limit: GatewayProto.maxID)
        out.pixCode = GatewayProto.text(m.pixCode, limit: 1024)
        out.qrCodeBase64 = GatewayProto.text(m.qrCodeBase64, limit: Int(PT_MAX_RESULT_BYTES))
        out.expiresAtUnixMs = m.expiresAtUnixMs
        // A plugin's message may quote the gateway's body, which may echo our request (its URL
        // with the token, the postback URL with the webhook secret): redacted like every log line.
        out.message = environment.redactor.redact(GatewayProto.text(m.message))
        switch GatewayProto.createOutcome(m.outcome.rawValue) {
        case nil:
            out.failure = GatewayCallFailure(.invalidResult, "unknown outcome number \(m.outcome.rawValue)")
        case .unknown?:
            break
        case .declined?:
            out.outcome = .declined
        case .notSent?:
            if call.mayHaveSent {
                out.failure = GatewayCallFailure(.invalidResult, "plugin said NOT_SENT but the host sent a request during the call")
            } else {
                out.outcome = .notSent
            }
        case .created?:
            if let problem = Self.createdProblem(out, request: request) {
                out.failure = GatewayCallFailure(.invalidResult, problem)
            } else {
                out.outcome = .created
            }
        }
        return out
    }

    /// Why a CREATED result cannot be trusted, or nil.
    static func createdProblem(_ r: CreatePixOutcome, request: CreatePixRequest) -> String? {
        guard !r.transactionID.isEmpty else { return "CREATED without a transaction id" }
        do {
            try BRCode.validate(r.pixCode)
        } catch {
            return "CREATED with an invalid pix code: \(error)"
        }
        if let amount = BRCode.amountCents(r.pixCode), amount != request.amountCents {
            return "pix code amount \(amount) differs from the requested \(request.amountCents) centavos"
        }
        return nil
    }

    /// Asks the gateway for a charge's status. Failures give `.unknown` with `failure` set.
    public func getStatus(_ query: StatusQuery) async -> StatusOutcome {
        let started = Clock.monotonicMs()
        var outcome = await getStatusUntimed(query)
        outcome.elapsedMs = Clock.monotonicMs() - started
        return outcome
    }

    private func getStatusUntimed(_ query: StatusQuery) async -> StatusOutcome {
        if query.transactionID.isEmpty && query.gatewayHash.isEmpty {
            guard !query.reference.isEmpty else {
                return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.unsupported, "no transaction id, hash or reference given"))
            }
            guard plugin.supportsStatusByReference else {
                return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.unsupported, "\(plugin.name) cannot look charges up by reference"))
            }
        }
        guard let bytes = try? GatewayProto.statusRequest(query).serializedBytes() else {
            return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.pluginError, "request could not be encoded"))
        }
        let (completion, _) = await invoke(.getStatus, bytes)
        switch completion {
        case .busy: return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.busy, "too many plugin calls running"))
        case .timedOut: return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.timeout, "plugin did not answer within \(timeoutMs) ms"))
        case .finished(let raw) where raw.lost != nil:
            return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.crashed, raw.lost!.reason))
        case .finished(let raw):
            guard raw.status == PT_OK else {
                let kind: GatewayCallFailure.Kind = raw.status == PT_ERR_UNSUPPORTED ? .unsupported : .pluginError
                return StatusOutcome(status: .unknown, failure: GatewayCallFailure(kind, code: raw.status, raw.message))
            }
            guard let m = decodeResult(raw, as: Pixtrack_V1_StatusResult.self) else {
                return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.invalidResult, raw.problem ?? "result does not decode as StatusResult"))
            }
            if let problem = GatewayProto.overlongID(("transaction_id", m.transactionId), ("gateway_hash", m.gatewayHash), ("reference", m.reference)) {
                return StatusOutcome(status: .unknown, failure: GatewayCallFailure(.invalidResult, problem))
            }
            var out = StatusOutcome(status: GatewayProto.status(m.status.rawValue),
                                    message: environment.redactor.redact(GatewayProto.text(m.message)))
            out.amountCents = m.amountCents
            out.paidAtUnixMs = m.paidAtUnixMs
            out.transactionID = GatewayProto.text(m.transactionId, limit: GatewayProto.maxID)
            out.rawStatus = GatewayProto.text(m.rawStatus, limit: GatewayProto.maxID)
            out.reference = GatewayProto.text(m.reference, limit: GatewayProto.maxID)
            out.gatewayHash = GatewayProto.text(m.gatewayHash, limit: GatewayProto.maxID)
            return out
        }
    }

    /// Parses a webhook. A hint only: confirm with `getStatus` before acting on it.
    public func parseWebhook(_ webhook: WebhookRequest) async -> WebhookOutcome {
        var failed = WebhookOutcome()
        guard let bytes = try? GatewayProto.webhookRequest(webhook).serializedBytes() else {
            failed.failure = GatewayCallFailure(.pluginError, "webhook could not be encoded (NUL in a header?)")
            return failed
        }
        let (completion, _) = await invoke(.parseWebhook, bytes)
        switch completion {
        case .busy: failed.failure = GatewayCallFailure(.busy, "too many plugin calls running")
        case .timedOut: failed.failure = GatewayCallFailure(.timeout, "plugin did not answer within \(timeoutMs) ms")
        case .finished(let raw) where raw.lost != nil:
            failed.failure = GatewayCallFailure(.crashed, raw.lost!.reason)
        case .finished(let raw):
            guard raw.status == PT_OK else {
                failed.failure = GatewayCallFailure(.pluginError, code: raw.status, raw.message)
                return failed
            }
            guard let m = decodeResult(raw, as: Pixtrack_V1_WebhookResult.self) else {
                failed.failure = GatewayCallFailure(.invalidResult, raw.problem ?? "result does not decode as WebhookResult")
                return failed
            }
            if let problem = GatewayProto.overlongID(("transaction_id", m.transactionId), ("gateway_hash", m.gatewayHash), ("reference", m.reference),
                                                    ("event_id", m.eventId)) {
                failed.failure = GatewayCallFailure(.invalidResult, problem)
                return failed
            }
            var out = WebhookOutcome()
            out.transactionID = GatewayProto.text(m.transactionId, limit: GatewayProto.maxID)
            out.reference = GatewayProto.text(m.reference, limit: GatewayProto.maxID)
            out.status = GatewayProto.status(m.status.rawValue)
            out.eventID = GatewayProto.text(m.eventId, limit: GatewayProto.maxID)
            out.amountCents = m.amountCents
            out.rawStatus = GatewayProto.text(m.rawStatus, limit: GatewayProto.maxID)
            out.gatewayHash = GatewayProto.text(m.gatewayHash, limit: GatewayProto.maxID)
            return out
        }
        return failed
    }

    // MARK: - Plumbing

    typealias Operation = PluginOperation
    typealias RawResult = PluginRawResult


    private func decodeResult<M: GeneratedMessage>(_ raw: RawResult, as type: M.Type) -> M? {
        guard let bytes = raw.bytes else { return nil }
        return try? M(serializedBytes: bytes)
    }

    private func invoke(_ op: Operation, _ request: [UInt8]) async -> (PluginThreads.Completion<RawResult>, PluginCall) {
        let call = PluginCall(environment: environment, operation: op.rawValue, timeoutMs: timeoutMs)
        let backend = self.backend
        let onTimeout: @Sendable () -> Void = {
            call.close()
            // A runner whose call hangs past its deadline is killed (and restarted): the hung
            // call's thread and quota slot come back, and nothing of it can act later.
            if case .remote(let r) = backend {
                r.runner.killIfStillRunning(call, graceMs: max(1_000, min(self.timeoutMs, 10_000)),
                                            reason: "\(op.rawValue) still running well past its \(self.timeoutMs) ms deadline")
            }
        }
        let completion: PluginThreads.Completion<RawResult>
        switch backend {
        case .local(let handle):
            completion = await threads.run(timeoutMs: timeoutMs, onTimeout: onTimeout) { Self.callPlugin(handle, call, op, request) }
        case .remote(let instance):
            completion = await threads.run(timeoutMs: timeoutMs, onTimeout: onTimeout) { finish in instance.start(call, op, request, finish: finish) }
        }
        if case .timedOut = completion {
            environment.logger.warning("plugin_call_timeout", ("plugin", plugin.name), ("instance", label),
                                       ("operation", op.rawValue), ("timeout_ms", String(timeoutMs)),
                                       ("threads_busy", String(threads.active)))
        }
        return (completion, call)
    }

    /// Runs on a plugin thread: calls the plugin, copies its result and frees it.
    static func callPlugin(_ handle: InstanceHandle, _ call: PluginCall, _ op: Operation, _ request: [UInt8]) -> RawResult {
        var result = PluginTable.invoke(handle.plugin.table!, handle.instance, call, op, request)
        call.close()
        result.message = call.environment.redactor.redact(result.message)
        return result
    }


}
