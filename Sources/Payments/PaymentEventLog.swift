import PixTrackMessages
import Postgres
import ProtoCodec
import RPC

/// One row of `payment_events`: a status change (or the creation) of a payment.
public struct PaymentEventRecord: Sendable, Equatable {
    /// The event's position in the log (`payment_events.id`); the wire cursor is its decimal text.
    public var cursor: Int64
    public var paymentID: Int64
    public var botID: Int64
    /// nil for the creation event.
    public var previous: PaymentStatus?
    public var status: PaymentStatus
    /// `pixtrack.v1.Payment` as the change left it, encoded.
    public var payment: [UInt8]
    public var atMs: Int64

    public init(cursor: Int64, paymentID: Int64, botID: Int64, previous: PaymentStatus?, status: PaymentStatus,
                payment: [UInt8], atMs: Int64) {
        self.cursor = cursor
        self.paymentID = paymentID
        self.botID = botID
        self.previous = previous
        self.status = status
        self.payment = payment
        self.atMs = atMs
    }

    /// `pixtrack.v1.PaymentEvent`.
    public func message() throws -> Pixtrack_V1_PaymentEvent {
        var m = Pixtrack_V1_PaymentEvent()
        m.cursor = PaymentEventCursor.text(cursor)
        m.payment = try Pixtrack_V1_Payment(serializedBytes: payment)
        m.atUnixMs = atMs
        if let previous { m.previousStatus = Pixtrack_V1_PaymentStatus(rawValue: previous.protoNumber) }
        return m
    }

    /// The wire bytes of `message()`, built without decoding the stored payment: a message field
    /// is its tag, length and bytes, so the stored encoding is copied as it is.
    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: payment.count + 40)
        w.bytes(1, Array(PaymentEventCursor.text(cursor).utf8), always: true)
        w.bytes(2, payment, always: true)
        if let previous { w.varint(3, UInt64(previous.protoNumber), always: true) }
        w.varint(4, UInt64(bitPattern: atMs))
        return w.bytes
    }

    /// A heartbeat: no payment, the stream's position as its cursor.
    public static func heartbeat(cursor: Int64, atMs: Int64) -> [UInt8] {
        var w = WireWriter()
        w.bytes(1, Array(PaymentEventCursor.text(cursor).utf8), always: true)
        w.varint(4, UInt64(bitPattern: atMs), always: true)
        return w.bytes
    }
}

/// Cursors on the wire: the event id as decimal text. Clients treat it as opaque.
public enum PaymentEventCursor {
    public static func text(_ id: Int64) -> String { String(id) }

    /// nil for text this server never issued.
    public static func parse(_ text: String) -> Int64? {
        guard let v = Int64(text), v >= 0, String(v) == text else { return nil }
        return v
    }
}

/// The `payment_events` log (DESIGN §7). `append` runs inside the transaction of the change it
/// records, so an event exists exactly when its change committed.
public enum PaymentEventLog {
    /// `LISTEN`/`NOTIFY` channel: a wake-up only, the table is the truth.
    public static let channel = "pixtrack_payment_events"
    /// The append lock (transaction-scoped advisory lock). Held from the event's id assignment
    /// to COMMIT, it makes ids follow commit order: the transaction that draws id N+1 starts
    /// after N committed or rolled back, so "every event after cursor N" never misses one that
    /// committed late. Appends are the last statement of their transactions, so it is held for
    /// a COMMIT's time.
    static let appendLockKey: Int64 = 0x5054_4556_4E54  // "PTEVNT"

    /// Appends the event for `payment` (as it now stands; `previous` nil at creation), queues its
    /// outbound notification, and notifies listeners at COMMIT. Returns the event's cursor.
    @discardableResult
    public static func append(_ payment: Payment, previous: PaymentStatus?, on c: PGConnection) throws -> Int64 {
        let bytes: [UInt8]
        do { bytes = try payment.message.serializedBytes() } catch { throw PGError(.invalidArgument, "payment does not encode") }
        try c.query("SELECT pg_advisory_xact_lock($1)", [.int(appendLockKey)])
        let rows = try c.query("""
            WITH e AS (
                INSERT INTO payment_events (id, payment_id, bot_id, previous_status, status, payment)
                VALUES (nextval('payment_events_id_seq'), $1, $2, $3, $4, $5)
                RETURNING id, payment_id, bot_id
            ), n AS (
                INSERT INTO payment_notifications (event_id, payment_id, bot_id) SELECT id, payment_id, bot_id FROM e
            )
            SELECT e.id, pg_notify($6, '') FROM e
            """, [.int(payment.id), .int(payment.botID), previous.map { .text($0.rawValue) }, .text(payment.status.rawValue),
                  .bytes(bytes), .text(channel)])
        guard let id = try rows.first?.int64("id") else { throw PGError(.queryFailed, "event not appended") }
        return id
    }

    static let columns = """
        id, payment_id, bot_id, previous_status, status, payment, (extract(epoch FROM created_at) * 1000)::bigint AS at_ms
        """

    /// Events after `cursor` (and at most `upTo` when given), in order, `limit` at most; only
    /// `botID`'s when it is not 0.
    public static func read(after cursor: Int64, upTo: Int64? = nil, botID: Int64 = 0, limit: Int,
                            on c: PGConnection) throws -> [PaymentEventRecord] {
        try c.query("""
            SELECT \(columns) FROM payment_events
            WHERE id > $1 AND ($2::bigint IS NULL OR id <= $2) AND ($3 = 0 OR bot_id = $3)
            ORDER BY id LIMIT $4
            """, [.int(cursor), upTo.map { .int($0) }, .int(botID), .int(Int64(limit))]).map(record)
    }

    /// The cursor of the newest event (0 when the log is empty).
    public static func head(on c: PGConnection) throws -> Int64 {
        // Under the append lock's ordering the highest id is the newest committed event.
        try c.query("SELECT coalesce(max(id), 0) AS id FROM payment_events").first?.int64("id") ?? 0
    }

    static func record(_ r: PGRow) throws -> PaymentEventRecord {
        PaymentEventRecord(cursor: try r.int64("id") ?? 0, paymentID: try r.int64("payment_id") ?? 0,
                           botID: try r.int64("bot_id") ?? 0,
                           previous: try r.string("previous_status").flatMap(PaymentStatus.init(rawValue:)),
                           status: PaymentStatus(rawValue: try r.string("status") ?? "") ?? .pendingVerification,
                           payment: try r.bytes("payment") ?? [], atMs: try r.int64("at_ms") ?? 0)
    }
}
