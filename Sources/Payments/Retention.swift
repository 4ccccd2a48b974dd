import MetaCAPI
import PixTrackMessages
import Postgres
import RPC
import Synchronization

/// How long data is kept (docs/secrets.md, *Retention*). 0 keeps it for ever.
public struct RetentionConfiguration: Sendable {
    /// Processed and rejected webhooks keep their metadata; body, headers and sender address go.
    public var webhookDays = 30
    /// Meta events that were sent or dropped are deleted.
    public var metaDays = 30
    /// Delivered and skipped notifications are deleted.
    public var notificationDays = 30
    /// Settled payments (paid, failed, expired, refunded, chargeback; not flagged) lose the
    /// buyer's name, e-mail, phone and document, in the row and in its events.
    public var piiDays = 90
    /// How often the job runs, and how many rows one batch (one transaction) touches.
    public var interval: Duration = .seconds(600)
    public var batchSize = 500

    public init() {}
}

/// A table the payments half does not own, pruned by the same job (e.g. `bot_users`' names):
/// `run` handles up to `limit` rows with SKIP LOCKED and returns how many it changed.
public struct RetentionStep: Sendable {
    public let table: String
    public let action: String
    public let days: Int
    public let run: @Sendable (PGConnection, Int) throws -> Int

    public init(table: String, action: String, days: Int, run: @escaping @Sendable (PGConnection, Int) throws -> Int) {
        self.table = table
        self.action = action
        self.days = days
        self.run = run
    }
}

/// The background job that applies `RetentionConfiguration`. Every step is a batch of rows
/// taken with `FOR UPDATE SKIP LOCKED` in its own transaction, so instances share the work and a
/// row a worker holds is never touched. Rows still in flight (webhooks not finished, Meta events
/// queued, sending or parked, notifications queued, sending or parked, payments open or flagged)
/// never match. Counted in `pixtrack_retention_rows_total{table,action}`.
public final class RetentionJob: Sendable {
    let pool: PGPool
    let configuration: RetentionConfiguration
    let metrics: Metrics
    let logger: Logger
    let extraSteps: [RetentionStep]
    private let task = Mutex<Task<Void, Never>?>(nil)

    public init(pool: PGPool, configuration: RetentionConfiguration, metrics: Metrics, logger: Logger, extraSteps: [RetentionStep] = []) {
        self.pool = pool
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.extraSteps = extraSteps
        for (table, action) in Self.steps + extraSteps.map({ ($0.table, $0.action) }) { count(table, action, 0) }
    }

    static let steps = [("webhook_inbox", "pruned"), ("meta_events", "deleted"), ("payment_notifications", "deleted"),
                        ("payments", "pii_removed"), ("payment_events", "pii_removed")]

    public func start() {
        let t = Task.detached { [self] in
            while !Task.isCancelled {
                do { _ = try await runOnce() } catch { logger.warning("retention_pass_failed", ("error", String(describing: error))) }
                try? await Task.sleep(for: configuration.interval)
            }
        }
        task.withLock { $0 = t }
    }

    public func shutdown() async {
        let t = task.withLock { t in defer { t = nil }; return t }
        t?.cancel()
        await t?.value
    }

    /// One full pass (every step until it finds nothing more); rows per "table/action".
    @discardableResult
    public func runOnce() async throws -> [String: Int] {
        var done: [String: Int] = [:]
        let c = configuration
        if c.webhookDays > 0 {
            done["webhook_inbox/pruned"] = try await drain("webhook_inbox", "pruned") { conn, limit in
                try conn.execute("""
                    WITH due AS (
                        SELECT id FROM webhook_inbox
                        WHERE pruned_at IS NULL AND status IN ('processed', 'rejected')
                          AND received_at < now() - make_interval(days => $1::int)
                          AND coalesce(processed_at, received_at) < now() - make_interval(days => $1::int)
                        ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                    UPDATE webhook_inbox w SET body = ''::bytea, headers = '[]'::jsonb, remote_addr = '', pruned_at = now()
                    FROM due WHERE w.id = due.id
                    """, [.int(Int64(c.webhookDays)), .int(Int64(limit))])
            }
        }
        if c.metaDays > 0 {
            done["meta_events/deleted"] = try await drain("meta_events", "deleted") { conn, limit in
                try MetaOutbox.deleteFinished(olderThanDays: c.metaDays, limit: limit, on: conn)
            }
        }
        if c.notificationDays > 0 {
            done["payment_notifications/deleted"] = try await drain("payment_notifications", "deleted") { conn, limit in
                try conn.execute("""
                    WITH due AS (
                        SELECT event_id FROM payment_notifications
                        WHERE status IN ('delivered', 'skipped') AND done_at < now() - make_interval(days => $1::int)
                        ORDER BY done_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                    DELETE FROM payment_notifications n USING due WHERE n.event_id = due.event_id
                    """, [.int(Int64(c.notificationDays)), .int(Int64(limit))])
            }
        }
        if c.piiDays > 0 {
            var payments = 0, events = 0
            while !Task.isCancelled {
                let (p, e) = try await pool.transaction { try Self.removeContactData(olderThanDays: c.piiDays, limit: c.batchSize, on: $0) }
                payments += p
                events += e
                count("payments", "pii_removed", p)
                count("payment_events", "pii_removed", e)
                if p < c.batchSize { break }
            }
            done["payments/pii_removed"] = payments
            done["payment_events/pii_removed"] = events
        }
        for step in extraSteps where step.days > 0 {
            done["\(step.table)/\(step.action)"] = try await drain(step.table, step.action, step.run)
        }
        let touched = done.filter { $0.value > 0 }
        if !touched.isEmpty {
            logger.log(.info, "retention_pass", touched.sorted { $0.key < $1.key }.map { ($0.key, String($0.value)) })
        }
        return done
    }

    /// Runs `step` in its own transaction until it touches fewer rows than a batch.
    private func drain(_ table: String, _ action: String,
                       _ step: @escaping @Sendable (PGConnection, Int) throws -> Int) async throws -> Int {
        var total = 0
        let limit = configuration.batchSize
        while !Task.isCancelled {
            let n = try await pool.transaction { try step($0, limit) }
            total += n
            count(table, action, n)
            if n < limit { break }
        }
        return total
    }

    private func count(_ table: String, _ action: String, _ n: Int) {
        metrics.increment("pixtrack_retention_rows_total", help: "Rows the retention job pruned, deleted or stripped of contact data, by table and action.",
                          labels: [("table", table), ("action", action)], by: Double(n))
    }

    /// The buyer's contact data leaves settled payments and their events; amounts, statuses,
    /// ids, times and attribution stay. Returns (payments, events) changed.
    static func removeContactData(olderThanDays days: Int, limit: Int, on c: PGConnection) throws -> (Int, Int) {
        let ids = try c.query("""
            WITH due AS (
                SELECT id FROM payments
                WHERE pii_removed_at IS NULL AND NOT flagged
                  AND status IN ('paid', 'failed', 'expired', 'refunded', 'chargeback')
                  AND updated_at < now() - make_interval(days => $1::int)
                ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
            UPDATE payments p SET customer_name = '', customer_email = '', customer_phone = '', customer_document = '',
                                  pii_removed_at = now()
            FROM due WHERE p.id = due.id RETURNING p.id
            """, [.int(Int64(days)), .int(Int64(limit))]).map { try $0.int64("id") ?? 0 }
        guard !ids.isEmpty else { return (0, 0) }
        let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
        var events = 0
        for r in try c.query("SELECT id, payment FROM payment_events WHERE payment_id = ANY($1::bigint[]) FOR UPDATE", [.text(list)]) {
            let id = try r.int64("id") ?? 0
            guard var m = try? Pixtrack_V1_Payment(serializedBytes: try r.bytes("payment") ?? []), m.customer != nil else { continue }
            m.customer = nil
            let bytes: [UInt8]
            do { bytes = try m.serializedBytes() } catch { throw PGError(.invalidArgument, "payment event \(id) does not re-encode") }
            events += try c.execute("UPDATE payment_events SET payment = $1 WHERE id = $2", [.bytes(bytes), .int(id)])
        }
        return (ids.count, events)
    }
}
