import JSONKit
import MetaCAPI
import PluginHost
import Postgres
import RPC

/// What processing one stored webhook decided.
public struct WebhookResult: Sendable, Equatable {
    public var inboxID: Int64
    public var paymentID: Int64 = 0
    public var status: PaymentStatus?
    public var message: String
    /// The inbox row's status afterwards: `processed`, `unmatched` or `retry` (tried again
    /// later), `parked` (out of attempts) or `rejected` (the plugin refused the body).
    public var inboxStatus = "processed"
}

/// What the gateway's plugin made of a webhook body.
public enum WebhookVerdict: Sendable, Equatable {
    case parsed(WebhookOutcome)
    /// The plugin refused the body (not JSON, names no charge, …): retrying cannot help.
    case rejected(String)
    /// Not parsed for a reason of ours (no account yet, plugin busy or slow): try again later.
    case deferred(String)
}

/// `POST /webhooks/{gateway}/{secret}`: the raw request is stored first (durable), parsed by
/// the plugin at once (a body it refuses is answered 400), and matched and confirmed in the
/// background (or inline for `HandleWebhook`). A webhook is only a hint: the payment changes
/// after the gateway's status API confirms.
public final class WebhookInbox: Sendable {
    let service: PaymentService

    public init(service: PaymentService) { self.service = service }

    /// True when `secret` is the configured one for `gateway` (constant-time comparison).
    public func accepts(gateway: String, secret: String) -> Bool {
        guard let expected = service.configuration.webhookSecrets[gateway], !expected.isEmpty else { return false }
        let a = Array(expected.utf8), b = Array(secret.utf8)
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<b.count { diff |= b[i] ^ (i < a.count ? a[i] : 0) }
        return diff == 0
    }

    /// The request headers a webhook keeps (stored, and handed to the plugin): what describes the
    /// body and the gateway's event. Everything else (`authorization`, `cookie`, proxies'
    /// forwarding headers …) is dropped before it is stored.
    public static let keptHeaders: Set<String> = [
        "content-type", "user-agent", "event", "x-event", "x-event-type", "x-webhook-event", "x-webhook-id",
        "x-request-id", "x-signature", "idempotency-key",
    ]

    public static func keptHeaders(_ headers: [GatewayHeader]) -> [GatewayHeader] {
        headers.filter { keptHeaders.contains($0.name.lowercased()) }
    }

    /// Stores the raw request. Throws `PGError` when PostgreSQL is down (answer 503: the gateway retries).
    /// - Parameter processingInline: the caller processes it right away (`HandleWebhook`): the
    ///   row is stored as that first attempt, leased like a claimed row, so background workers
    ///   leave it alone unless the caller dies before recording the result.
    public func store(gateway: String, headers: [GatewayHeader], body: [UInt8], remoteAddr: String,
                      processingInline: Bool = false) async throws -> Int64 {
        let headerJSON = JSON.array(Self.keptHeaders(headers).map { JSON.object(["name": .string($0.name), "value": .string($0.value)]) }).serialized
        let leaseMs = processingInline ? service.configuration.webhookLeaseMs : 0
        let id = try await service.pool.withConnection { c in
            try c.query("""
                INSERT INTO webhook_inbox (gateway, headers, body, remote_addr, attempts, next_attempt_at)
                VALUES ($1, $2::jsonb, $3, $4, $5, now() + make_interval(secs => $6::bigint / 1000.0)) RETURNING id
                """, [.text(gateway), .text(headerJSON), .bytes(body), .text(remoteAddr), .int(processingInline ? 1 : 0),
                      .int(leaseMs)]).first?.int64("id") ?? 0
        }
        service.count("webhook", "stored")
        return id
    }

    /// Claims due rows (new, unmatched or waiting for a retry, with attempts left) with
    /// `FOR UPDATE SKIP LOCKED`, leasing them by pushing `next_attempt_at`, and processes them
    /// concurrently. Rows whose every attempt was claimed but never recorded (the worker died
    /// mid-way, e.g. a plugin crash) are parked first. Returns how many were claimed.
    @discardableResult
    public func processDue(limit: Int = 20) async throws -> Int {
        let cfg = service.configuration
        let abandoned = try await service.pool.withConnection { c in
            try c.query("""
                UPDATE webhook_inbox SET status = 'parked', processed_at = now(),
                    result = left('processing never finished after ' || attempts || ' attempts (worker stopped mid-way); last: ' || result, 500)
                WHERE status IN ('new', 'unmatched', 'retry') AND attempts >= $1 AND next_attempt_at <= now()
                RETURNING id, gateway
                """, [.int(cfg.webhookMaxAttempts)]).map { (try $0.int64("id") ?? 0, try $0.string("gateway") ?? "") }
        }
        for (id, gateway) in abandoned {
            service.count("webhook", "parked")
            service.logger.warning("webhook_parked", ("inbox_id", String(id)), ("gateway", gateway),
                                   ("reason", "processing never finished after \(cfg.webhookMaxAttempts) attempts"))
        }
        let rows = try await service.pool.transaction { c in
            try c.query("""
                WITH due AS (SELECT id FROM webhook_inbox WHERE status IN ('new', 'unmatched', 'retry') AND next_attempt_at <= now()
                               AND attempts < $3
                             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                UPDATE webhook_inbox w SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2::bigint / 1000.0)
                FROM due WHERE w.id = due.id RETURNING w.id, w.gateway, w.headers::text AS headers, w.body, w.attempts
                """, [.int(limit), .int(cfg.webhookLeaseMs), .int(cfg.webhookMaxAttempts)]).map { r in
                (try r.int64("id") ?? 0, try r.string("gateway") ?? "", try r.string("headers") ?? "[]",
                 try r.bytes("body") ?? [], try r.int("attempts") ?? 1)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for (id, gateway, headers, body, attempts) in rows {
                group.addTask { _ = await self.process(id: id, gateway: gateway, headers: Self.headers(headers), body: body, attempts: attempts) }
            }
        }
        return rows.count
    }

    /// Asks the gateway's plugin what the body says (no network: parsing is local).
    public func parse(gateway: String, headers: [GatewayHeader], body: [UInt8]) async -> WebhookVerdict {
        let account: BotGatewayAccount?
        do {
            account = try await service.bots.anyAccount(gateway: gateway)
        } catch let e as RPCError {
            return .deferred(e.message)
        } catch {
            return .deferred("database unavailable")
        }
        guard let account else { return .deferred("no bot account uses gateway '\(gateway)'") }
        let instance: any PaymentGateway
        do {
            instance = try await service.gateways.instance(for: account)
        } catch {
            return .deferred("gateway account unusable: \(error)")
        }
        let outcome = await instance.parseWebhook(WebhookRequest(headers: headers, body: body))
        if let f = outcome.failure {
            // The plugin said the body is unusable; a timeout, busy plugin or garbled result is ours to retry.
            if f.refusedInput { return .rejected(f.message.isEmpty ? "the plugin refused the body" : f.message) }
            return .deferred("plugin could not parse the webhook: \(f)")
        }
        if outcome.transactionID.isEmpty && outcome.gatewayHash.isEmpty && outcome.reference.isEmpty {
            return .rejected("the webhook names no charge (no transaction id, hash or reference)")
        }
        return .parsed(outcome)
    }

    /// Parses, matches, confirms, and records the result on the inbox row.
    public func process(id: Int64, gateway: String, headers: [GatewayHeader], body: [UInt8], attempts: Int) async -> WebhookResult {
        let verdict = await parse(gateway: gateway, headers: headers, body: body)
        return await process(id: id, gateway: gateway, verdict: verdict, attempts: attempts)
    }

    public func process(id: Int64, gateway: String, verdict: WebhookVerdict, attempts: Int) async -> WebhookResult {
        var result = WebhookResult(inboxID: id, message: "")
        // nil: final (processed or rejected); else the status to retry under.
        var retryAs: String? = nil
        switch verdict {
        case .rejected(let why):
            result.message = "rejected: \(why)"
            result.inboxStatus = "rejected"
        case .deferred(let why):
            result.message = why
            retryAs = "retry"
        case .parsed(let outcome):
            do {
                if let payment = try await match(gateway: gateway, outcome) {
                    result.paymentID = payment.id
                    let hint = GatewayHint(transactionID: outcome.transactionID, gatewayHash: outcome.gatewayHash)
                    if let applied = try await service.confirm(payment, source: "webhook", hint: hint) {
                        result.status = applied.payment.status
                        result.message = Self.describe(applied)
                        // Gateway down, or it does not know the charge yet: ask again later.
                        if !applied.gatewayAnswered, case .ignore = applied.action {
                            retryAs = "retry"
                            result.message += " (status check: \(applied.gatewayFailure ?? applied.gatewayStatus?.rawValue ?? "no answer"))"
                        }
                    } else {
                        result.status = payment.status
                        result.message = "matched \(payment.reference); gateway status could not be asked"
                        retryAs = "retry"
                    }
                } else {
                    result.message = "no payment matches transaction id '\(outcome.transactionID)', hash '\(outcome.gatewayHash)' or reference '\(outcome.reference)'"
                    retryAs = "unmatched"
                }
            } catch {
                result.message = "processing failed: \(error)"
                retryAs = "retry"
            }
        }
        let cfg = service.configuration
        if let retryAs { result.inboxStatus = attempts >= cfg.webhookMaxAttempts ? "parked" : retryAs }
        let status = result.inboxStatus
        service.count("webhook", status)
        if status == "parked" {
            service.logger.warning("webhook_parked", ("inbox_id", String(id)), ("gateway", gateway), ("reason", result.message))
        }
        let (r, pid, retryMs) = (result.message, result.paymentID, cfg.webhookRetryDelayMs(afterAttempt: attempts))
        do {
            try await service.pool.withConnection { c in
                try c.execute("""
                    UPDATE webhook_inbox SET status = $2, result = $3, payment_id = nullif($4, 0),
                        processed_at = CASE WHEN $2 IN ('processed', 'parked', 'rejected') THEN now() ELSE processed_at END,
                        next_attempt_at = CASE WHEN $2 IN ('unmatched', 'retry') THEN now() + make_interval(secs => $5::bigint / 1000.0)
                                          ELSE next_attempt_at END
                    WHERE id = $1
                    """, [.int(id), .text(status), .text(String(r.prefix(500))), .int(pid), .int(retryMs)])
            }
        } catch {
            service.logger.error("webhook_result_not_recorded", ("inbox_id", String(id)), ("error", String(describing: error)))
        }
        return result
    }

    /// Exact matching only: transaction id, then the gateway's second id (hash), then `PAY-{id}`,
    /// then the legacy payment id.
    func match(gateway: String, _ o: WebhookOutcome) async throws -> Payment? {
        if !o.transactionID.isEmpty, let p = try await service.get(gateway: gateway, transactionID: o.transactionID) { return p }
        if !o.gatewayHash.isEmpty, let p = try await service.get(gateway: gateway, gatewayHash: o.gatewayHash) { return p }
        if let id = Payment.id(fromReference: o.reference), let p = try await service.get(id: id), p.gateway == gateway { return p }
        if Payment.isLegacyID(o.reference), let p = try await service.get(reference: o.reference), p.gateway == gateway { return p }
        return nil
    }

    static func describe(_ a: Applied) -> String {
        switch a.action {
        case .transition(let to, _, _): "\(a.payment.reference): \(a.previous.rawValue) -> \(to.rawValue)"
        case .flag(let why): "\(a.payment.reference) flagged: \(why)"
        case .ignore(let why): "\(a.payment.reference) unchanged (\(a.payment.status.rawValue)): \(why)"
        }
    }

    static func headers(_ text: String) -> [GatewayHeader] {
        guard let items = (try? JSON.parse(Array(text.utf8)))?.array else { return [] }
        return items.compactMap { h in h["name"]?.string.map { GatewayHeader($0, h["value"]?.string ?? "") } }
    }
}
