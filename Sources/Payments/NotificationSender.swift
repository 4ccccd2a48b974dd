import Dispatch
import Glibc
import HTTPClient
import MetaCAPI
import PixTrackMessages
import Postgres
import RPC
import Synchronization

/// Tuning of outbound notifications (`PIXTRACK_NOTIFY_*`).
public struct NotificationConfiguration: Sendable {
    /// First retry delay; it doubles per attempt up to `retryMaxMs`.
    public var retryMs: Int64 = 5_000
    public var retryMaxMs: Int64 = 3_600_000
    /// Retries stop this long after the event (or the operator's requeue): the delivery is parked.
    public var maxAgeMs: Int64 = 3 * 86_400_000
    /// Attempts before parking, whatever the age.
    public var maxAttempts = 200
    /// One POST, connect included.
    public var timeoutMs = 10_000
    public var pollInterval: Duration = .seconds(1)
    /// Deliveries claimed (and POSTed concurrently) per pass.
    public var batch = 32
    public init() {}

    /// Delay after the `attempts`-th failed attempt.
    public func retryDelayMs(afterAttempt attempts: Int) -> Int64 {
        let shift = min(max(attempts - 1, 0), 40)
        let d = retryMs.multipliedReportingOverflow(by: Int64(1) << shift)
        return d.overflow ? retryMaxMs : min(d.partialValue, retryMaxMs)
    }
}

/// The signature scheme of outbound notifications (README "Verifying notifications"):
/// `PixTrack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
public enum NotificationSignature {
    public static func header(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        "t=\(timestamp),v1=" + SHA256Hex.hmac(key: Array(secret.utf8), message: Array("\(timestamp).".utf8) + body)
    }
}

/// Delivers `payment_notifications` (one per event, queued in the event's transaction) to each
/// bot's `notify_url`: claimed with `FOR UPDATE SKIP LOCKED` and leased as `sending` (several
/// instances never POST the same delivery at once; a dead instance's lease lapses and the
/// delivery goes again: at-least-once), at most one open delivery per payment at a time (in
/// order per payment), retried with doubling delay on anything but a 2xx, parked after the last
/// attempt (`RequeueNotifications` queues parked ones again). Bots without a URL: `skipped`.
public final class NotificationSender: Sendable {
    /// What one pass did.
    public struct PassResult: Sendable, Equatable {
        public var claimed = 0, delivered = 0, retried = 0, parked = 0, skipped = 0
        public init() {}
    }

    private struct Claimed: Sendable {
        var eventID: Int64, botID: Int64, attempts: Int, retryFromMs: Int64
    }

    private struct Outcome: Sendable {
        var eventID: Int64
        var status: String  // delivered | queued | parked | skipped
        var result: String
        var delayMs: Int64 = 0
    }

    public let configuration: NotificationConfiguration
    private let pool: PGPool
    private let bots: any BotGatewayDirectory
    private let client: HTTPClient
    private let metrics: Metrics
    private let logger: Logger
    private let wake = MetaWakeSignal()
    private let task = Mutex<(task: Task<Void, Never>?, stopping: Bool)>((nil, false))
    /// (oldest undelivered age in seconds, parked count), refreshed by the loop.
    private let gauges = NotificationGauges()

    public init(pool: PGPool, bots: any BotGatewayDirectory, configuration: NotificationConfiguration = NotificationConfiguration(),
                metrics: Metrics = Metrics(), logger: Logger = Logger()) {
        self.pool = pool
        self.bots = bots
        self.configuration = configuration
        var http = HTTPClient.Configuration()
        http.timeoutMs = configuration.timeoutMs
        http.connectTimeoutMs = min(configuration.timeoutMs, 5_000)
        http.maxResponseBytes = 64 << 10
        client = HTTPClient(configuration: http)
        self.metrics = metrics
        self.logger = logger
        let gauges = self.gauges
        metrics.gauge("pixtrack_notification_oldest_undelivered_seconds",
                      help: "Age of the oldest notification not yet delivered (queued or being sent), refreshed every pass.") {
            [([], gauges.value.withLock { $0.0 })]
        }
        metrics.gauge("pixtrack_notifications_parked", help: "Notifications parked after their last attempt (pixtrack notify requeue).") {
            [([], Double(gauges.value.withLock { $0.1 }))]
        }
    }

    public func start() {
        task.withLock { t in
            guard t.task == nil, !t.stopping else { return }
            t.task = Task { [self] in await loop() }
        }
    }

    public func wakeUp() { wake.signal() }

    /// Stops after the pass in flight (its deliveries are recorded; unsent ones stay queued).
    public func shutdown() async {
        let running = task.withLock { t -> Task<Void, Never>? in t.stopping = true; return t.task }
        wake.signal()
        await running?.value
    }

    private func loop() async {
        var lastError: ContinuousClock.Instant?
        while !task.withLock({ $0.stopping }) {
            var result = PassResult()
            do {
                result = try await runPass()
                try await refreshGauges()
            } catch {
                if lastError.map({ ContinuousClock.now - $0 > .seconds(10) }) ?? true {
                    logger.warning("notification_pass_failed", ("error", String(describing: error)))
                    lastError = .now
                }
            }
            if result.claimed > 0 { continue }
            await wake.wait(timeout: configuration.pollInterval)
        }
    }

    /// One claim–POST–record pass (public for tests).
    @discardableResult
    public func runPass() async throws -> PassResult {
        let leaseMs = Int64(configuration.timeoutMs) + 30_000
        let batch = configuration.batch
        let claimed = try await pool.transaction { c in
            try c.query("""
                WITH due AS (
                    SELECT n.event_id FROM payment_notifications n
                    WHERE n.status IN ('queued', 'sending') AND n.next_attempt_at <= now()
                      AND NOT EXISTS (SELECT 1 FROM payment_notifications e WHERE e.payment_id = n.payment_id
                                      AND e.event_id < n.event_id AND e.status IN ('queued', 'sending'))
                    ORDER BY n.next_attempt_at, n.event_id LIMIT $1
                    FOR UPDATE OF n SKIP LOCKED
                )
                UPDATE payment_notifications n
                SET status = 'sending', attempts = n.attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
                FROM due WHERE n.event_id = due.event_id
                RETURNING n.event_id, n.bot_id, n.attempts, (extract(epoch FROM n.retry_from) * 1000)::bigint AS retry_from_ms
                """, [.int(Int64(batch)), .int(leaseMs)]).map { r in
                Claimed(eventID: try r.int64("event_id") ?? 0, botID: try r.int64("bot_id") ?? 0,
                        attempts: try r.int("attempts") ?? 1, retryFromMs: try r.int64("retry_from_ms") ?? 0)
            }
        }
        var result = PassResult()
        result.claimed = claimed.count
        guard !claimed.isEmpty else { return result }
        let outcomes = await withTaskGroup(of: Outcome.self) { group -> [Outcome] in
            for item in claimed { group.addTask { await self.deliver(item) } }
            var all: [Outcome] = []
            for await o in group { all.append(o) }
            return all
        }
        try await pool.transaction { c in
            for o in outcomes {
                try c.execute("""
                    UPDATE payment_notifications SET status = $2, last_result = $3,
                        next_attempt_at = now() + $4 * interval '1 millisecond',
                        done_at = CASE WHEN $2 IN ('delivered', 'parked', 'skipped') THEN now() END
                    WHERE event_id = $1 AND status = 'sending'
                    """, [.int(o.eventID), .text(o.status), .text(String(o.result.prefix(300))), .int(o.delayMs)])
            }
        }
        for o in outcomes {
            switch o.status {
            case "delivered": result.delivered += 1
            case "parked": result.parked += 1
            case "skipped": result.skipped += 1
            default: result.retried += 1
            }
            let label = o.status == "queued" ? "retried" : o.status
            metrics.increment("pixtrack_notifications_total", help: "Outbound notification deliveries, by result.",
                              labels: [("result", label)])
            if o.status == "parked" {
                logger.warning("notification_parked", ("event", String(o.eventID)), ("result", o.result))
            }
        }
        return result
    }

    private func deliver(_ item: Claimed) async -> Outcome {
        let account: BotGatewayAccount?
        let event: PaymentEventRecord?
        do {
            account = try await bots.account(botID: item.botID)
            event = try await pool.withConnection { c in
                try c.query("SELECT \(PaymentEventLog.columns) FROM payment_events WHERE id = $1", [.int(item.eventID)])
                    .first.map(PaymentEventLog.record)
            }
        } catch {
            return failed(item, "storage: \(error)")
        }
        guard let account, !account.notifyURL.isEmpty, !account.notifySecret.isEmpty, let event else {
            return Outcome(eventID: item.eventID, status: "skipped", result: "bot has no notify_url")
        }
        let body: [UInt8]
        do { body = try event.message().jsonUTF8() } catch {
            return Outcome(eventID: item.eventID, status: "parked", result: "event does not encode")
        }
        let t = Int64(PaymentWatchers.nowMs() / 1000)
        let request = HTTPClientRequest(method: "POST", url: account.notifyURL, headers: [
            HTTPClientHeader("content-type", "application/json"),
            HTTPClientHeader("PixTrack-Event-Id", PaymentEventCursor.text(event.position)),
            HTTPClientHeader("PixTrack-Signature", NotificationSignature.header(secret: account.notifySecret, timestamp: t, body: body)),
        ], body: body)
        let client = self.client
        let answer = await withCheckedContinuation { (k: CheckedContinuation<HTTPClientResult, Never>) in
            // libcurl blocks: a dispatch thread, never the cooperative pool.
            DispatchQueue.global().async { k.resume(returning: client.execute(request)) }
        }
        if answer.error == nil, (200..<300).contains(answer.status) {
            return Outcome(eventID: item.eventID, status: "delivered", result: "HTTP \(answer.status)")
        }
        let why = answer.error == nil ? "HTTP \(answer.status)" : "\(answer.error.map { "\($0)" } ?? "error"): \(answer.errorMessage)"
        return failed(item, why)
    }

    private func failed(_ item: Claimed, _ why: String) -> Outcome {
        let delay = configuration.retryDelayMs(afterAttempt: item.attempts)
        let nowMs = PaymentWatchers.nowMs()
        if item.attempts >= configuration.maxAttempts || nowMs + delay > item.retryFromMs + configuration.maxAgeMs {
            return Outcome(eventID: item.eventID, status: "parked", result: "after \(item.attempts) attempts: \(why)")
        }
        return Outcome(eventID: item.eventID, status: "queued", result: why, delayMs: delay)
    }

    private func refreshGauges() async throws {
        let row = try await pool.withConnection { c in
            try c.query("""
                SELECT coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status IN ('queued', 'sending'))), 0)::float8 AS age,
                       count(*) FILTER (WHERE status = 'parked') AS parked
                FROM payment_notifications WHERE status IN ('queued', 'sending', 'parked')
                """).first
        }
        let age = try row?.double("age") ?? 0, parked = try row?.int("parked") ?? 0
        gauges.value.withLock { $0 = (age, parked) }
    }

    /// Parked deliveries (of `botID` unless 0; only `cursors` unless empty) queued again with a
    /// fresh retry window. Returns how many (with `dryRun`, would be).
    public func requeue(botID: Int64, cursors: [Int64], dryRun: Bool) async throws -> Int {
        let list = "{" + cursors.map(String.init).joined(separator: ",") + "}"
        let filter = "status = 'parked' AND ($1 = 0 OR bot_id = $1) AND (cardinality($2::bigint[]) = 0 OR event_id = ANY($2::bigint[]))"
        let n: Int
        do {
            n = try await pool.withConnection { c in
                dryRun
                    ? try c.query("SELECT count(*) AS n FROM payment_notifications WHERE \(filter)", [.int(botID), .text(list)]).first?.int("n") ?? 0
                    : try c.execute("""
                        UPDATE payment_notifications SET status = 'queued', attempts = 0, next_attempt_at = now(), retry_from = now(),
                            done_at = NULL WHERE \(filter)
                        """, [.int(botID), .text(list)])
            }
        } catch let e as PGError {
            throw e.rpcError
        }
        if !dryRun, n > 0 { wake.signal() }
        return n
    }
}

private final class NotificationGauges: Sendable {
    let value = Mutex<(Double, Int)>((0, 0))
}
