import PixTrackMessages
import Postgres
import ProtoCodec
import RPC

/// Where an event stands in the log: its order key (`payment_events.xid`: the writing
/// transaction's 64-bit id, or the payment's previous key when higher; see `PaymentEventLog`),
/// then the event's id. Readers see only keys below every transaction still running, so
/// nothing can later appear before a position already read (DESIGN §7). Events written before
/// this order existed have `xid` 0.
public struct PaymentEventPosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var xid: UInt64
    public var id: Int64

    public init(xid: UInt64, id: Int64) {
        self.xid = xid
        self.id = id
    }

    /// Before every event.
    public static let start = PaymentEventPosition(xid: 0, id: 0)

    public static func < (a: Self, b: Self) -> Bool { (a.xid, a.id) < (b.xid, b.id) }

    public var description: String { PaymentEventCursor.text(self) }
}

/// One row of `payment_events`: a status change (or the creation) of a payment.
public struct PaymentEventRecord: Sendable, Equatable {
    /// The event's position in the log; the wire cursor is `PaymentEventCursor.text(position)`.
    public var position: PaymentEventPosition
    /// The event's id (`payment_events.id`): unique and stable, the notifications' event id.
    public var id: Int64 { position.id }
    public var paymentID: Int64
    public var botID: Int64
    /// nil for the creation event.
    public var previous: PaymentStatus?
    public var status: PaymentStatus
    /// `pixtrack.v1.Payment` as the change left it, encoded.
    public var payment: [UInt8]
    public var atMs: Int64

    public init(position: PaymentEventPosition, paymentID: Int64, botID: Int64, previous: PaymentStatus?, status: PaymentStatus,
                payment: [UInt8], atMs: Int64) {
        self.position = position
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
        m.cursor = PaymentEventCursor.text(position)
        m.payment = try Pixtrack_V1_Payment(serializedBytes: payment)
        m.atUnixMs = atMs
        if let previous { m.previousStatus = Pixtrack_V1_PaymentStatus(rawValue: previous.protoNumber) }
        return m
    }

    /// The wire bytes of `message()`, built without decoding the stored payment: a message field
    /// is its tag, length and bytes, so the stored encoding is copied as it is.
    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: payment.count + 40)
        w.bytes(1, Array(PaymentEventCursor.text(position).utf8), always: true)
        w.bytes(2, payment, always: true)
        if let previous { w.varint(3, UInt64(previous.protoNumber), always: true) }
        w.varint(4, UInt64(bitPattern: atMs))
        return w.bytes
    }

    /// A heartbeat: no payment, the stream's position as its cursor.
    public static func heartbeat(cursor: PaymentEventPosition, atMs: Int64) -> [UInt8] {
        var w = WireWriter()
        w.bytes(1, Array(PaymentEventCursor.text(cursor).utf8), always: true)
        w.varint(4, UInt64(bitPattern: atMs), always: true)
        return w.bytes
    }
}

/// Cursors on the wire, opaque to clients: `<xid>.<id>`, or the bare id for an event written
/// before positions had a transaction id (`xid` 0) — which is also every cursor issued before,
/// so those still resume where they were.
public enum PaymentEventCursor {
    public static func text(_ p: PaymentEventPosition) -> String {
        p.xid == 0 ? String(p.id) : "\(p.xid).\(p.id)"
    }

    /// nil for text this server never issued.
    public static func parse(_ text: String) -> PaymentEventPosition? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            guard let id = Int64(text), id >= 0, String(id) == text else { return nil }
            return PaymentEventPosition(xid: 0, id: id)
        case 2:
            guard let xid = UInt64(parts[0]), xid > 0, String(xid) == parts[0],
                  let id = Int64(parts[1]), id >= 0, String(id) == parts[1] else { return nil }
            return PaymentEventPosition(xid: xid, id: id)
        default:
            return nil
        }
    }
}

/// The `payment_events` log (DESIGN §7). `append` runs inside the transaction of the change it
/// records, so an event exists exactly when its change committed.
///
/// Order without a lock: each event carries an order key (`xid`): its transaction's id, or the
/// key of the same payment's previous event when that is higher. The log is read in (`xid`,
/// `id`) order, only below `pg_snapshot_xmin` — the oldest transaction still running:
/// - an event not yet committed has a key at or above its own transaction's id, hence at or
///   above that bound: everything below it is final;
/// - a transaction that can still append has an id at or above the bound, so its events sort
///   after everything already read: a reader never skips an event that committed late;
/// - a payment's changes hold its row lock, so its next event reads the previous one's key and
///   never sorts before it (a transaction can draw its id before an earlier change of the same
///   payment draws its own);
/// - writers never wait for each other.
/// The price: an event is readable once every older writing transaction of the database has
/// ended (payment transactions are short; the LISTEN/NOTIFY wake-up comes at each commit).
public enum PaymentEventLog {
    /// `LISTEN`/`NOTIFY` channel: a wake-up only, the table is the truth.
    public static let channel = "pixtrack_payment_events"

    /// Appends the event for `payment` (as it now stands; `previous` nil at creation), queues its
    /// outbound notification, and notifies listeners at COMMIT. Returns the event's position.
    @discardableResult
    public static func append(_ payment: Payment, previous: PaymentStatus?, on c: PGConnection) throws -> PaymentEventPosition {
        let rows = try c.query(appendSQL + "\nSELECT e.id, e.xid::text AS xid_text, pg_notify($6, '') FROM e",
                               try appendParameters(payment, previous))
        guard let row = rows.first, let id = try row.int64("id") else { throw PGError(.queryFailed, "event not appended") }
        return PaymentEventPosition(xid: try xid(row), id: id)
    }

    /// `append` without waiting for its answer (`PGConnection.enqueue`): in a transaction it goes
    /// out with the next statement or the COMMIT. The CTE always inserts its row or fails.
    public static func appendQueued(_ payment: Payment, previous: PaymentStatus?, on c: PGConnection) throws {
        try c.enqueue(appendSQL + "\nSELECT pg_notify($6, '') FROM e", try appendParameters(payment, previous))
    }

    private static let appendSQL = """
        WITH e AS (
            INSERT INTO payment_events (id, xid, payment_id, bot_id, previous_status, status, payment)
            VALUES (nextval('payment_events_id_seq'),
                    greatest(pg_current_xact_id(),
                             (SELECT xid FROM payment_events WHERE payment_id = $1 ORDER BY xid DESC LIMIT 1)),
                    $1, $2, $3, $4, $5)
            RETURNING id, xid, payment_id, bot_id
        ), n AS (
            INSERT INTO payment_notifications (event_id, payment_id, bot_id) SELECT id, payment_id, bot_id FROM e
        )
        """

    private static func appendParameters(_ payment: Payment, _ previous: PaymentStatus?) throws -> [PGValue?] {
        let bytes: [UInt8]
        do { bytes = try payment.message.serializedBytes() } catch { throw PGError(.invalidArgument, "payment does not encode") }
        return [.int(payment.id), .int(payment.botID), previous.map { .text($0.rawValue) }, .text(payment.status.rawValue),
                .bytes(bytes), .text(channel)]
    }

    // The key is read as text under another name: `ORDER BY xid` must mean the column, not a
    // text alias (which would sort "999" after "2084").
    static let columns = """
        id, xid::text AS xid_text, payment_id, bot_id, previous_status, status, payment,
        (extract(epoch FROM created_at) * 1000)::bigint AS at_ms
        """

    /// Readable events after `position` (and at most `upTo` when given), in order, `limit` at
    /// most; only `botID`'s when it is not 0.
    public static func read(after position: PaymentEventPosition, upTo: PaymentEventPosition? = nil, botID: Int64 = 0, limit: Int,
                            on c: PGConnection) throws -> [PaymentEventRecord] {
        try c.query("""
            SELECT \(columns) FROM payment_events
            WHERE (xid, id) > ($1::xid8, $2::bigint)
              AND ($3::xid8 IS NULL OR (xid, id) <= ($3::xid8, $4::bigint))
              AND xid < pg_snapshot_xmin(pg_current_snapshot())
              AND ($5 = 0 OR bot_id = $5)
            ORDER BY xid, id LIMIT $6
            """, [.text(String(position.xid)), .int(position.id), upTo.map { .text(String($0.xid)) }, .int(upTo?.id ?? 0),
                  .int(botID), .int(Int64(limit))]).map(record)
    }

    /// The position of the newest readable event (`.start` when there is none).
    public static func head(on c: PGConnection) throws -> PaymentEventPosition {
        guard let row = try c.query("""
            SELECT id, xid::text AS xid_text FROM payment_events
            WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY xid DESC, id DESC LIMIT 1
            """).first, let id = try row.int64("id") else { return .start }
        return PaymentEventPosition(xid: try xid(row), id: id)
    }

    /// True when committed events wait behind a transaction still running (they become readable
    /// when it ends, which may send no notification): the reader should look again soon.
    public static func hasHeldBack(on c: PGConnection) throws -> Bool {
        try c.query("""
            SELECT EXISTS (SELECT 1 FROM payment_events WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())) AS held
            """).first?.bool("held") ?? false
    }

    private static func xid(_ r: PGRow) throws -> UInt64 {
        guard let text = try r.string("xid_text"), let v = UInt64(text) else { throw PGError(.queryFailed, "event without a transaction id") }
        return v
    }

    static func record(_ r: PGRow) throws -> PaymentEventRecord {
        PaymentEventRecord(position: PaymentEventPosition(xid: try xid(r), id: try r.int64("id") ?? 0), paymentID: try r.int64("payment_id") ?? 0,
                           botID: try r.int64("bot_id") ?? 0,
                           previous: try r.string("previous_status").flatMap(PaymentStatus.init(rawValue:)),
                           status: PaymentStatus(rawValue: try r.string("status") ?? "") ?? .pendingVerification,
                           payment: try r.bytes("payment") ?? [], atMs: try r.int64("at_ms") ?? 0)
    }
}
