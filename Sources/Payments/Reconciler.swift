import Postgres
import RPC
import Synchronization

/// Settles what GeneratePix and webhooks left open. Safe with several instances: due rows are
/// claimed with `FOR UPDATE SKIP LOCKED` and leased by moving `next_check_at` forward (the
/// backoff) in the claiming transaction, so each check happens once.
///
/// - `pending_verification` older than the gateway timeout: status by transaction id, or by
///   reference where the plugin supports it. After `reconcileMaxChecks` checks that learned
///   nothing it becomes `unresolved` (flagged: an operator looks it up), never `failed`.
/// - `pending`: polled with backoff until the PIX expiry plus a grace period (some gateways
///   never deliver webhooks), then flagged if the gateway still says pending.
/// A status check that goes unanswered (gateway down) is simply tried again at the next backoff.
public final class Reconciler: Sendable {
    public struct PassResult: Sendable, Equatable {
        public var claimed = 0, changed = 0, gaveUp = 0, unanswered = 0
        public init() {}
    }

    let service: PaymentService
    private let counts = Mutex<[String: Int]>([:])

    public init(service: PaymentService) { self.service = service }

    /// One claim–check–apply pass.
    public func runPass() async throws -> PassResult {
        let cfg = service.configuration
        // A pending_verification row younger than the timeout (+1 s) may still have its call running.
        // The lease (next_check_at) is at least the gateway timeout + 1 s: the claimed rows are
        // checked concurrently, so no other instance can claim one while its check runs.
        let claimed = try await service.pool.transaction { c in
            try c.query("""
                WITH due AS (
                    SELECT id FROM payments
                    WHERE status IN ('pending_verification', 'pending') AND next_check_at <= now() AND NOT reconcile_done
                      AND (status = 'pending' OR created_at <= now() - make_interval(secs => ($2::bigint + 1000) / 1000.0))
                    ORDER BY next_check_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
                UPDATE payments p SET checks = p.checks + 1,
                    next_check_at = now() + make_interval(secs => GREATEST(LEAST($3::float8 * power(2, LEAST(p.checks, 30)), $4::float8),
                                                                         $2::float8 + 1000) / 1000.0)
                WHERE p.id IN (SELECT id FROM due)
                RETURNING \(Payment.columns), (extract(epoch FROM now()) * 1000)::bigint AS now_ms
                """, [.int(cfg.reconcileBatch), .int(cfg.gatewayTimeoutMs),
                      .double(Double(cfg.reconcileBackoffBaseMs)), .double(Double(cfg.reconcileBackoffMaxMs))])
                .map { (try Payment(row: $0), try $0.int64("now_ms") ?? 0) }
        }
        var result = PassResult()
        result.claimed = claimed.count
        let outcomes = await withTaskGroup(of: PassResult.self) { group in
            for (p, nowMs) in claimed { group.addTask { await self.check(p, nowMs: nowMs) } }
            var all: [PassResult] = []
            for await r in group { all.append(r) }
            return all
        }
        for r in outcomes {
            result.changed += r.changed
            result.unanswered += r.unanswered
            result.gaveUp += r.gaveUp
        }
        if result.claimed > 0 {
            service.count("reconcile", "checked")
            service.metrics.increment("pixtrack_reconciler_checks_total", help: "Payments checked by the reconciler.",
                                      by: Double(result.claimed))
        }
        return result
    }

    /// Whether the reconciler stops after this check of `p` (claimed at `nowMs`, its `checks`
    /// already counting this one) if it learns nothing.
    func isLastCheck(_ p: Payment, nowMs: Int64) -> Bool {
        let cfg = service.configuration
        return p.status == .pending ? nowMs >= cfg.pollDeadlineMs(p) : p.checks >= cfg.reconcileMaxChecks
    }

    /// One claimed payment: ask the gateway; after the last check without an answer, give up.
    private func check(_ p: Payment, nowMs: Int64) async -> PassResult {
        var r = PassResult()
        var applied: Applied?
        do {
            applied = try await service.confirm(p, source: "reconciler")
        } catch {
            service.logger.warning("reconcile_check_failed", ("payment", p.reference), ("error", String(describing: error)))
        }
        if let a = applied, a.changed {
            r.changed = 1
            return r
        }
        if let a = applied, case .flag = a.action { return r }
        if applied?.gatewayAnswered != true { r.unanswered = 1 }
        guard isLastCheck(p, nowMs: nowMs) else { return r }
        if let a = try? await service.giveUp(id: p.id, checks: p.checks), a.changed || a.payment.flagged {
            r.gaveUp = 1
            service.count("reconcile", "gave_up")
            service.logger.warning("reconcile_gave_up", ("payment", p.reference), ("status", a.payment.status.rawValue),
                                   ("reason", a.payment.reviewReason))
        }
        return r
    }

    /// Refreshes the numbers `/metrics` shows (called by the background loop).
    func refreshGauges() async {
        if let c = try? await service.gaugeCounts() { counts.withLock { $0 = c } }
    }

    /// Registers the gauges: payments by status, flagged for review, webhooks by inbox status.
    public func registerGauges() {
        service.metrics.gauge("pixtrack_payments", help: "Payments by status (refreshed by the reconciler).") { [self] in
            self.counts.withLock { c in c.filter { $0.key.hasPrefix("status:") }.map { ([("status", String($0.key.dropFirst(7)))], Double($0.value)) } }
        }
        service.metrics.gauge("pixtrack_payments_flagged_for_review", help: "Payments an operator must look at.") { [self] in
            [([], Double(self.counts.withLock { $0["flagged"] ?? 0 }))]
        }
        service.metrics.gauge("pixtrack_webhooks", help: "Stored webhooks by inbox status (parked: never matched).") { [self] in
            self.counts.withLock { c in c.filter { $0.key.hasPrefix("webhooks:") }.map { ([("status", String($0.key.dropFirst(9)))], Double($0.value)) } }
        }
    }
}

/// Runs the reconciler and the webhook processor until shut down.
public final class PaymentWorkers: Sendable {
    private let reconciler: Reconciler
    private let inbox: WebhookInbox
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let nudged = Atomic<Bool>(false)

    public init(reconciler: Reconciler, inbox: WebhookInbox) {
        self.reconciler = reconciler
        self.inbox = inbox
    }

    /// Nudges the webhook processor (a webhook was just stored).
    public func webhookArrived() { nudged.store(true, ordering: .releasing) }

    public func start() {
        reconciler.registerGauges()
        let (r, i, cfg) = (reconciler, inbox, reconciler.service.configuration)
        let log = reconciler.service.logger
        let reconcile = Task.detached {
            while !Task.isCancelled {
                do { _ = try await r.runPass() } catch { log.warning("reconcile_pass_failed", ("error", String(describing: error))) }
                await r.refreshGauges()
                try? await Task.sleep(for: .milliseconds(cfg.reconcileIntervalMs))
            }
        }
        let webhooks = Task.detached { [self] in
            while !Task.isCancelled {
                do {
                    while try await i.processDue() > 0 {}
                } catch { log.warning("webhook_pass_failed", ("error", String(describing: error))) }
                // Wait for a nudge or the poll interval, whichever first.
                var waited: Int64 = 0
                while waited < cfg.webhookIntervalMs, !Task.isCancelled,
                      !self.nudged.exchange(false, ordering: .acquiringAndReleasing) {
                    try? await Task.sleep(for: .milliseconds(20))
                    waited += 20
                }
            }
        }
        tasks.withLock { $0 = [reconcile, webhooks] }
    }

    public func shutdown() async {
        let running = tasks.withLock { t in defer { t = [] }; return t }
        for t in running { t.cancel() }
        for t in running { await t.value }
    }
}
