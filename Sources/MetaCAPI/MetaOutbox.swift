import JSONKit
import Postgres
import Synchronization

/// The durable queue in front of the Conversions API (`meta_events`). An event is queued in
/// PostgreSQL before the caller answers; `MetaSender` delivers it later, possibly from another
/// server instance. Queueing the same (pixel, event_name, event_id) twice keeps the first.
public enum MetaOutbox {
    /// Queues `events` on `connection`: inside the caller's transaction when it has one, so an
    /// event commits together with the row that caused it (the Purchase with its payment).
    /// - Returns: how many were new (duplicates are ignored).
    @discardableResult
    public static func enqueue(_ events: [MetaEvent], on connection: PGConnection) throws -> Int {
        var inserted = 0
        for e in events {
            inserted += try connection.execute("""
                INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload, test_event_code)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6)
                ON CONFLICT (pixel_id, event_name, event_id) DO NOTHING
                """, [.text(e.pixelID), .text(e.eventName), .text(e.eventID), .int(e.eventTime),
                      .text(e.payloadText), .text(e.testEventCode)])
        }
        return inserted
    }

    /// Queues `events` in one autocommitted statement each (no caller transaction).
    @discardableResult
    public static func enqueue(_ events: [MetaEvent], pool: PGPool) async throws -> Int {
        guard !events.isEmpty else { return 0 }
        return try await pool.withConnection { try enqueue(events, on: $0) }
    }

    /// Queues `events` with ONE multi-row `INSERT … ON CONFLICT DO NOTHING` (one statement:
    /// autocommitted, it is one transaction and one commit). Used by `MetaOutboxBatcher`, which
    /// removes duplicates within the batch first.
    /// - Returns: the keys of the rows that were new.
    static func enqueueReturningNew(_ events: [MetaEvent], on connection: PGConnection) throws -> Set<MetaEvent.Key> {
        guard !events.isEmpty else { return [] }
        let (sql, params) = batchInsert(events)
        // One text per batch size: only the single-event one earns a prepared statement.
        return try insertedKeys(connection.query(sql, params, prepare: events.count == 1))
    }

    /// The multi-row INSERT for `events` (not empty) and its parameters, 6 per event.
    static func batchInsert(_ events: [MetaEvent]) -> (sql: String, params: [PGValue?]) {
        (BatchInsertTexts.text(rows: events.count), batchParams(events))
    }

    /// The batch INSERTs' parameters: 6 per event, in column order.
    private static func batchParams(_ events: [MetaEvent]) -> [PGValue?] {
        var params: [PGValue?] = []
        params.reserveCapacity(events.count * 6)
        for e in events {
            params += [.text(e.pixelID), .text(e.eventName), .text(e.eventID), .int(e.eventTime),
                       .text(e.payloadText), .text(e.testEventCode)]
        }
        return params
    }

    /// Batches of up to this many events run their plain INSERT as a prepared statement (one per
    /// row count, on the pipelined connection); larger ones, rare, are parsed at each run.
    static let preparedBatchRows = 48
    /// The prepared statements' names, by row count (made once, not per batch).
    private static let preparedBatchNames = (0...preparedBatchRows).map { "pixtrack_outbox_insert_\($0)" }

    /// The plain multi-row INSERT for `events` (not empty): no `ON CONFLICT`, so PostgreSQL checks
    /// each key once, while inserting it, instead of probing the unique index first and then
    /// inserting. A key already queued fails the whole statement (SQLSTATE 23505, nothing
    /// inserted): the caller then writes the batch again with `batchInsert`. `name`: the prepared
    /// statement to run it as (nil past `preparedBatchRows`).
    static func plainBatchInsert(_ events: [MetaEvent]) -> (name: String?, sql: String, params: [PGValue?]) {
        let rows = events.count
        return (rows <= preparedBatchRows ? preparedBatchNames[rows] : nil, BatchInsertTexts.text(rows: rows, onConflict: false),
                batchParams(events))
    }

    /// The keys the batch INSERT's `RETURNING` named: the rows that were new.
    static func insertedKeys(_ rows: PGRows) throws -> Set<MetaEvent.Key> {
        var inserted = Set<MetaEvent.Key>()
        for row in rows {
            inserted.insert(MetaEvent.Key(pixelID: try row.string("pixel_id") ?? "", eventName: try row.string("event_name") ?? "",
                                          eventID: try row.string("event_id") ?? ""))
        }
        return inserted
    }

    /// What `requeueParked` did (or, dry, would do).
    public struct Requeued: Sendable, Equatable {
        public var requeued: Int
        /// Parked events whose `event_time` is past Meta's window: left parked.
        public var tooOld: Int
    }

    /// Puts the parked events of `pixelID` (of one `eventName` and only `eventIDs`, when given)
    /// back in the queue, due now, with a fresh attempt count; `last_error` keeps why they had
    /// been parked. Events older than `maxAgeSeconds` stay parked (Meta refuses them). One
    /// transaction.
    public static func requeueParked(pixelID: String, eventName: String = "", eventIDs: [String] = [], dryRun: Bool = false,
                                     maxAgeSeconds: Int64 = MetaSenderConfiguration().maxEventAgeSeconds,
                                     pool: PGPool) async throws -> Requeued {
        let filter = """
            status = 'parked' AND pixel_id = $1 AND ($2 = '' OR event_name = $2)
            AND ($4::jsonb = '[]'::jsonb OR event_id IN (SELECT jsonb_array_elements_text($4::jsonb)))
            """
        let ids = JSON.array(eventIDs.map { .string($0) }).serialized
        let fresh = "event_time >= extract(epoch FROM now())::bigint - $3"
        return try await pool.transaction { c in
            let row = try c.query("""
                SELECT count(*) FILTER (WHERE \(fresh)) AS fresh, count(*) FILTER (WHERE NOT (\(fresh))) AS old
                FROM meta_events WHERE \(filter)
                """, [.text(pixelID), .text(eventName), .int(maxAgeSeconds), .text(ids)]).first
            var result = Requeued(requeued: try row?.int("fresh") ?? 0, tooOld: try row?.int("old") ?? 0)
            if !dryRun && result.requeued > 0 {
                result.requeued = try c.execute("""
                    UPDATE meta_events
                    SET status = 'queued', attempts = 0, next_attempt_at = now(), updated_at = now(),
                        last_error = 'requeued after: ' || coalesce(last_error, '')
                    WHERE \(filter) AND \(fresh)
                    """, [.text(pixelID), .text(eventName), .int(maxAgeSeconds), .text(ids)])
            }
            return result
        }
    }

    /// Counts by status (`queued`, `sent`, `parked`, `dropped`).
    public static func counts(pool: PGPool) async throws -> [String: Int] {
        try await pool.withConnection { c in
            var out: [String: Int] = [:]
            for row in try c.query("SELECT status, count(*) AS n FROM meta_events GROUP BY status") {
                out[try row.string("status") ?? ""] = try row.int("n") ?? 0
            }
            return out
        }
    }
}

extension MetaOutbox {
    /// Retention: deletes up to `limit` events that were sent or dropped more than `days` ago
    /// (queued, sending and parked ones stay), skipping rows another transaction holds.
    /// Returns how many went.
    public static func deleteFinished(olderThanDays days: Int, limit: Int, on c: PGConnection) throws -> Int {
        try c.execute("""
            WITH due AS (
                SELECT id FROM meta_events
                WHERE status IN ('sent', 'dropped') AND updated_at < now() - make_interval(days => $1::int)
                ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
            DELETE FROM meta_events m USING due WHERE m.id = due.id
            """, [.int(Int64(days)), .int(Int64(limit))])
    }
}

/// The multi-row INSERT texts of the outbox's batches, one per row count and form, made once
/// each (up to `cached` rows; larger batches, which a configuration may allow, are made per call):
/// with `ON CONFLICT … DO NOTHING RETURNING` the keys (`MetaOutbox.enqueueReturningNew`), or plain
/// (`MetaOutbox.plainBatchInsert`).
enum BatchInsertTexts {
    static let cached = 256
    private static let texts = Mutex<[String?]>(Array(repeating: nil, count: 2 * (cached + 1)))

    static func text(rows: Int, onConflict: Bool = true) -> String {
        let slot = rows + (onConflict ? 0 : cached + 1)
        if rows <= cached, let known = texts.withLock({ $0[slot] }) { return known }
        var sql = "INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload, test_event_code) VALUES "
        for i in 0..<rows {
            let n = i * 6
            sql += (i == 0 ? "" : ", ") + "($\(n + 1), $\(n + 2), $\(n + 3), $\(n + 4), $\(n + 5)::jsonb, $\(n + 6))"
        }
        if onConflict { sql += " ON CONFLICT (pixel_id, event_name, event_id) DO NOTHING RETURNING pixel_id, event_name, event_id" }
        if rows <= cached { texts.withLock { $0[slot] = sql } }
        return sql
    }
}
