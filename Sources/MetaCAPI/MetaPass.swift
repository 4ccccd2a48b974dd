import Glibc
import JSONKit
import Postgres
import RPC

/// One sender pass on one connection, each statement committed on its own (autocommit).
/// Synchronous by design: it runs on the connection's own thread (see `MetaSender`).
///
/// The send window: due rows are claimed by moving them to `sending` (committed) before any
/// POST, and each batch's rows are stamped again right before their POST; the answer is then
/// recorded. Another instance never claims a `sending` row. A row found `sending` longer than
/// the lease was being sent by a sender that died between the POST and the record of its
/// answer: Meta may have counted it, so a Purchase is parked as "sent without an answer"
/// (never re-sent on a guess) and a PageView is queued again (Meta dedups by event id, and the
/// browser copy carries the same id).
struct MetaPass {
    struct Row {
        let id: Int64
        let pixelID: String
        let eventName: String
        let testEventCode: String
        let payload: String
        let eventTime: Int64
        let attempts: Int
    }

    struct Outcome: Sendable {
        var summary = MetaSender.PassResult()
        var sentByName: [String: Int] = [:]
        var failedByName: [String: Int] = [:]
        var parkedByName: [String: Int] = [:]
        var droppedByName: [String: Int] = [:]
        var requestsByResult: [String: Int] = [:]
    }

    let configuration: MetaSenderConfiguration
    let transport: any MetaTransport
    let connection: PGConnection
    let logger: Logger
    var outcome = Outcome()

    init(configuration: MetaSenderConfiguration, transport: any MetaTransport, connection: PGConnection, logger: Logger) {
        self.configuration = configuration
        self.transport = transport
        self.connection = connection
        self.logger = logger
    }

    mutating func run(tokens: any MetaAccessTokenSource) throws -> Outcome {
        try recoverAbandoned()
        let rows = try claim()
        outcome.summary.claimed = rows.count
        guard !rows.isEmpty else { return outcome }
        let oldest = Self.nowSeconds() - configuration.maxEventAgeSeconds
        let expired = rows.filter { $0.eventTime < oldest }
        if !expired.isEmpty {
            try finish(expired, status: "dropped", error: "older than 7 days: Meta would refuse it")
            for r in expired { outcome.droppedByName[r.eventName, default: 0] += 1 }
            outcome.summary.dropped += expired.count
        }
        // Groups keep the claim order (oldest due first).
        var groups: [(key: String, rows: [Row])] = []
        var index: [String: Int] = [:]
        for r in rows where r.eventTime >= oldest {
            let code = r.testEventCode.isEmpty ? configuration.defaultTestEventCode : r.testEventCode
            let key = r.pixelID + "\u{1}" + code
            if let i = index[key] { groups[i].rows.append(r) } else { index[key] = groups.count; groups.append((key, [r])) }
        }
        for group in groups {
            let pixel = group.rows[0].pixelID
            let stored: String?
            do { stored = try tokens.accessToken(pixelID: pixel, connection: connection) } catch let e as MetaAccessTokenUnusable {
                // Fail closed: a token that does not decrypt is never sent; an operator requeues
                // the events once the key is fixed.
                try park(group.rows, reason: e.message)
                continue
            }
            guard let token = stored, !token.isEmpty else {
                try park(group.rows, reason: "no Conversions API access token configured for pixel \(pixel)")
                continue
            }
            let code = String(group.key.split(separator: "\u{1}", omittingEmptySubsequences: false).last ?? "")
            var start = 0
            while start < group.rows.count {
                let end = min(start + configuration.batchSize, group.rows.count)
                try deliver(Array(group.rows[start..<end]), pixel: pixel, token: token, testEventCode: code)
                start = end
            }
        }
        return outcome
    }

    /// Rows a dead sender left `sending` past the lease (see the type's comment).
    private mutating func recoverAbandoned() throws {
        let rows = try connection.query("""
            UPDATE meta_events
            SET status = CASE WHEN event_name = $2 THEN 'parked' ELSE 'queued' END,
                last_error = CASE WHEN event_name = $2 THEN $3 ELSE 'found sending after its sender stopped; queued again' END,
                attempts = attempts + 1, updated_at = now(), next_attempt_at = now()
            WHERE status = 'sending' AND updated_at < now() - make_interval(secs => $1::bigint / 1000.0)
            RETURNING event_name, pixel_id
            """, [.int(configuration.sendingLeaseMs), .text(MetaEvent.purchaseName),
                  .text("\(Self.unansweredPurchase) (found sending after its sender stopped mid-request)")])
        guard !rows.isEmpty else { return }
        var parked = 0
        for r in rows where try r.string("event_name") == MetaEvent.purchaseName {
            parked += 1
            outcome.parkedByName[MetaEvent.purchaseName, default: 0] += 1
        }
        outcome.summary.parked += parked
        logger.warning("meta_events_recovered", ("events", String(rows.count)), ("purchases_parked", String(parked)),
                       ("requeued", String(rows.count - parked)))
    }

    /// Moves due rows to `sending` (committed at once) and returns them, oldest due first.
    private func claim() throws -> [Row] {
        let rows = try connection.query("""
            WITH due AS (
                SELECT id FROM meta_events
                WHERE status = 'queued' AND next_attempt_at <= now()
                ORDER BY next_attempt_at, id
                LIMIT $1
                FOR UPDATE SKIP LOCKED)
            UPDATE meta_events m SET status = 'sending', updated_at = now()
            FROM due WHERE m.id = due.id
            RETURNING m.id, m.pixel_id, m.event_name, m.test_event_code, m.payload::text AS payload, m.event_time, m.attempts,
                      (extract(epoch FROM m.next_attempt_at) * 1000000)::bigint AS due_us
            """, [.int(configuration.batchSize)])
        return try rows.map { r in
            (Row(id: try r.int64("id") ?? 0, pixelID: try r.string("pixel_id") ?? "", eventName: try r.string("event_name") ?? "",
                 testEventCode: try r.string("test_event_code") ?? "", payload: try r.string("payload") ?? "{}",
                 eventTime: try r.int64("event_time") ?? 0, attempts: try r.int("attempts") ?? 0), try r.int64("due_us") ?? 0)
        }.sorted { ($0.1, $0.0.id) < ($1.1, $1.0.id) }.map(\.0)
    }

    /// Posts `rows` as one request and records the result; code 100 on several events splits.
    private mutating func deliver(_ rows: [Row], pixel: String, token: String, testEventCode: String) throws {
        var body = Array("{\"data\":[".utf8)
        for (i, r) in rows.enumerated() {
            if i > 0 { body.append(UInt8(ascii: ",")) }
            body += Array(r.payload.utf8)  // already JSON: PostgreSQL rendered the jsonb
        }
        body += Array("]".utf8)
        if !testEventCode.isEmpty {
            body += Array(",\"test_event_code\":".utf8)
            body += JSON.string(testEventCode).bytes
        }
        body.append(UInt8(ascii: "}"))
        let url = configuration.endpoint(pixelID: pixel) + "?access_token=" + Self.percentEncode(token)
        // The lease of these rows starts now, whatever the batches before them took.
        try connection.execute("UPDATE meta_events SET updated_at = now() WHERE id = ANY($1::bigint[]) AND status = 'sending'",
                               [.text(Self.idArray(rows))])
        let response = transport.post(url: url, body: body, timeoutMs: configuration.timeoutMs(events: rows.count))
        outcome.summary.requests += 1
        let decision = MetaDelivery.classify(response)
        switch decision {
        case .delivered:
            outcome.requestsByResult["delivered", default: 0] += 1
            try finish(rows, status: "sent", error: nil)
            for r in rows { outcome.sentByName[r.eventName, default: 0] += 1 }
            outcome.summary.sent += rows.count
        case .retry(let reason, let notBefore):
            outcome.requestsByResult["retry", default: 0] += 1
            // The request went out and no answer came back: Meta may have counted it, and it
            // does not promise to dedup server-to-server repeats. PageViews are retried; a
            // Purchase is never sent twice on a guess: it is parked for an operator.
            let sentUnanswered = response.failure == .timeout || response.failure == .transport
            let held = sentUnanswered ? rows.filter { $0.eventName == MetaEvent.purchaseName } : []
            let again = held.isEmpty ? rows : rows.filter { $0.eventName != MetaEvent.purchaseName }
            if !held.isEmpty {
                try park(held, reason: "\(Self.unansweredPurchase) (\(reason))")
            }
            if !again.isEmpty {
                try retry(again, reason: reason, notBeforeSeconds: notBefore)
                logger.info("meta_batch_retry", ("pixel_id", pixel), ("events", String(again.count)), ("reason", reason))
            }
        case .invalidEvent(let reason) where rows.count > 1:
            outcome.requestsByResult["invalid", default: 0] += 1
            let half = rows.count / 2
            try deliver(Array(rows[..<half]), pixel: pixel, token: token, testEventCode: testEventCode)
            try deliver(Array(rows[half...]), pixel: pixel, token: token, testEventCode: testEventCode)
            _ = reason
        case .invalidEvent(let reason), .park(let reason):
            outcome.requestsByResult["park", default: 0] += 1
            try park(rows, reason: reason)
        }
    }

    private mutating func park(_ rows: [Row], reason: String) throws {
        try finish(rows, status: "parked", error: reason)
        for r in rows { outcome.parkedByName[r.eventName, default: 0] += 1 }
        outcome.summary.parked += rows.count
        logger.warning("meta_events_parked", ("pixel_id", rows.first?.pixelID ?? ""), ("events", String(rows.count)), ("reason", reason))
    }

    private func finish(_ rows: [Row], status: String, error: String?) throws {
        try connection.execute("""
            UPDATE meta_events
            SET status = $2, last_error = $3, attempts = attempts + 1, updated_at = now(),
                sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END
            WHERE id = ANY($1::bigint[])
            """, [.text(Self.idArray(rows)), .text(status), error.map { .text($0) }])
    }

    private mutating func retry(_ rows: [Row], reason: String, notBeforeSeconds: Int?) throws {
        let floorMs = Int64(max(0, min(notBeforeSeconds ?? 0, 3600))) * 1000
        let delays = rows.map { max(floorMs, configuration.backoff.delayMs(attempt: $0.attempts + 1)) }
        try connection.execute("""
            UPDATE meta_events m
            SET status = 'queued', attempts = m.attempts + 1, last_error = $3, updated_at = now(),
                next_attempt_at = now() + u.delay_ms * interval '1 millisecond'
            FROM unnest($1::bigint[], $2::bigint[]) AS u(id, delay_ms)
            WHERE m.id = u.id
            """, [.text(Self.idArray(rows)), .text("{" + delays.map(String.init).joined(separator: ",") + "}"), .text(reason)])
        for r in rows { outcome.failedByName[r.eventName, default: 0] += 1 }
        outcome.summary.retried += rows.count
    }

    /// Why a Purchase whose request went unanswered is parked, and what the operator does.
    static let unansweredPurchase = "sent without an answer: Meta may already count this Purchase; "
        + "check Events Manager, and only if it is missing send it again with RequeueMetaEvents"

    static func idArray(_ rows: [Row]) -> String { "{" + rows.map { String($0.id) }.joined(separator: ",") + "}" }

    static func nowSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }

    /// RFC 3986 unreserved characters stay; everything else is %XX.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 0xF, radix: 16, uppercase: true)
            }
        }
        return out
    }
}
