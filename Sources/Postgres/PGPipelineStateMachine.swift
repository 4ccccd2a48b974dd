/// What one non-blocking, pipelined PostgreSQL connection is doing, as a value: whether it is
/// connected, the requests sent and not yet answered (in order), the requests held while it
/// connects, and when the next answer is due. It performs no I/O and reads no clock: the loop
/// (`PGPipelineLoop`) feeds it events (a request, connected, connect failed, an answer, the
/// connection broke, the time, close) and carries out the action each returns. `Request` is
/// whoever waits for one statement's answer (a completion in the loop, a plain value in tests).
///
/// Rules it holds:
/// - answers are matched to requests strictly in order (each request is one statement and its
///   own Sync, so one failing statement never aborts the next);
/// - a connection with requests outstanding must make progress: when no answer arrived within
///   `answerTimeout` (counted from the first request sent to an idle connection, then from each
///   answer) it is broken, and every request on it fails: a late answer would otherwise be taken
///   for the next request's;
/// - a broken connection fails what was sent on it and what was held; the next request
///   connects again at once. A connect that failed makes requests fail at once for `backoff`
///   (PostgreSQL is down: no caller waits for a connect that will fail the same way);
/// - at most `capacity` requests are sent or held at once; more are refused, never queued
///   without bound;
/// - a request may name a prepared statement (`Prepared`): the first time a name is sent on a
///   connection it goes out as Parse + Bind/Execute under one Sync (`prepareThenRun`), later
///   ones as Bind/Execute alone (`prepared`). The names are the connection's: a new connection
///   knows none. A failed prepare forgets its name (the next request prepares again; see
///   `answered` for the server's answers that say more); a name whose text or parameter types
///   differ from those it was prepared with, or one past `maxPrepared` names, is
///   sent unnamed (parsed at each run), so a caller's mistake costs speed, never a wrong
///   statement, and the server holds a bounded number of statements per connection;
/// - once closed it stays closed.
struct PGPipelineStateMachine<Request> {
    /// A statement a request asks to run prepared under `name`: its text and parameter types
    /// (what it is prepared with).
    struct Prepared: Equatable, Sendable {
        let name: String
        /// What the name stands for on a connection (the same key `PGConnection`'s statement
        /// cache uses).
        let body: PGConnection.Statement.Key

        init(name: String, sql: String, types: [UInt32] = []) {
            self.name = name
            body = PGConnection.Statement.Key(sql: sql, types: types)
        }
    }

    /// How a sent request goes on the wire.
    enum Way: Equatable, Sendable {
        /// Parsed at each run (`PQsendQueryParams`).
        case unnamed
        /// Already prepared on this connection: Bind/Execute only (`PQsendQueryPrepared`).
        case prepared(String)
        /// Parse then Bind/Execute (`PQsendPrepare` + `PQsendQueryPrepared`) under one Sync: its
        /// answer has two result groups, the prepare's and the statement's.
        case prepareThenRun(String)
    }

    /// A request to write now, and how.
    struct Send {
        let request: Request
        let way: Way
    }

    private struct Entry {
        let request: Request
        let prepared: Prepared?
        var way: Way = .unnamed
    }

    enum State: Equatable, Sendable {
        /// No connection: the next request connects (or, inside the back-off, is refused).
        case idle
        /// A connect is under way (on a thread of its own); requests are held.
        case connecting
        case ready
        case closed
    }

    private(set) var state: State = .idle
    /// Sent, in order; the first is the one whose answer comes next.
    private var sent: [Entry] = []
    /// Held while connecting, in arrival order.
    private var held: [Entry] = []
    /// The statements prepared on this connection (or on their way): name → text and types.
    private(set) var preparedNames: [String: PGConnection.Statement.Key] = [:]
    /// When the next answer is due (nil: nothing outstanding).
    private(set) var deadline: ContinuousClock.Instant?
    /// Until when requests are refused after a failed connect.
    private(set) var downUntil: ContinuousClock.Instant?
    /// Nil: no client-side deadline (`statement_timeout` off, as `PGConnection` has it).
    let answerTimeout: Duration?
    let backoff: Duration
    let capacity: Int
    /// The most statements prepared on one connection.
    let maxPrepared: Int

    init(answerTimeout: Duration?, backoff: Duration, capacity: Int, maxPrepared: Int = 64) {
        self.answerTimeout = answerTimeout
        self.backoff = backoff
        self.capacity = max(1, capacity)
        self.maxPrepared = max(0, maxPrepared)
    }

    /// How the oldest sent request went (nil: none is outstanding): the reader of its answer
    /// needs to know whether a prepare's result comes first.
    var oldestWay: Way? { sent.first?.way }

    /// Requests sent and not yet answered.
    var outstanding: Int { sent.count }
    /// Requests held while connecting.
    var waiting: Int { held.count }

    enum SubmitAction {
        /// Write it to the connection now, this way.
        case send(Send)
        /// Held: start a connect (the first request of an idle connection).
        case connect
        /// Held until the connect under way ends.
        case hold
        /// Answer it with this error at once.
        case refuse(Request, PGError)
    }

    mutating func submit(_ request: Request, prepared: Prepared? = nil, now: ContinuousClock.Instant) -> SubmitAction {
        let entry = Entry(request: request, prepared: prepared)
        switch state {
        case .closed:
            return .refuse(request, PGError(.poolClosed, "the PostgreSQL pipeline is closed"))
        case _ where sent.count + held.count >= capacity:
            return .refuse(request, PGError(.poolTimeout, "too many PostgreSQL statements waiting (\(capacity))"))
        case .ready:
            if sent.isEmpty { deadline = answerTimeout.map { now + $0 } }
            let outgoing = planned(entry)
            sent.append(outgoing)
            return .send(Send(request: request, way: outgoing.way))
        case .connecting:
            held.append(entry)
            return .hold
        case .idle:
            if let downUntil, now < downUntil {
                return .refuse(request, PGError(.unavailable, "PostgreSQL is down (a recent connect failed); not retrying yet"))
            }
            downUntil = nil
            held.append(entry)
            state = .connecting
            return .connect
        }
    }

    /// Decides how `entry` goes on the wire of the current connection, noting a name it prepares.
    private mutating func planned(_ entry: Entry) -> Entry {
        var entry = entry
        guard let p = entry.prepared else { return entry }
        if let known = preparedNames[p.name] {
            entry.way = known == p.body ? .prepared(p.name) : .unnamed
        } else if preparedNames.count < maxPrepared {
            preparedNames[p.name] = p.body
            entry.way = .prepareThenRun(p.name)
        }
        return entry
    }

    /// The connect succeeded: what was held is to be sent, in order (a new connection: no
    /// statement is prepared on it yet).
    mutating func connected(now: ContinuousClock.Instant) -> [Send] {
        guard state == .connecting else { return [] }
        state = .ready
        preparedNames = [:]
        sent = held.map { planned($0) }
        held = []
        deadline = sent.isEmpty ? nil : answerTimeout.map { now + $0 }
        return sent.map { Send(request: $0.request, way: $0.way) }
    }

    /// The connect failed: what was held fails with it, and requests are refused for `backoff`.
    mutating func connectFailed(now: ContinuousClock.Instant) -> [Request] {
        guard state == .connecting else { return [] }
        state = .idle
        downUntil = backoff > .zero ? now + backoff : nil
        let failed = held
        held = []
        return failed.map(\.request)
    }

    /// The oldest sent request got its whole answer (its results and its Sync).
    /// - `prepareFailed`: it was sent `prepareThenRun` and the prepare itself was refused;
    /// - `sqlState`: the answer's error, if any.
    ///
    /// What the answer says of its name: a refused prepare is forgotten, so the next request
    /// prepares again, unless the server said the name is taken (42P05, prepared by someone
    /// else): the name then runs unnamed on this connection. A statement the server no longer
    /// has (26000, e.g. after `DEALLOCATE`) is forgotten and prepared again next time; one whose
    /// cached plan no longer fits (0A000, a schema change) runs unnamed from then on. A statement
    /// that failed otherwise after its prepare succeeded keeps its name (the server keeps a
    /// prepared statement when its transaction fails). Nil when nothing was outstanding: the
    /// caller treats that as a protocol failure.
    mutating func answered(prepareFailed: Bool = false, sqlState: String? = nil, now: ContinuousClock.Instant) -> Request? {
        guard !sent.isEmpty else { return nil }
        let entry = sent.removeFirst()
        let name: String?
        switch entry.way {
        case .prepared(let n), .prepareThenRun(let n): name = preparedNames[n] == entry.prepared?.body ? n : nil
        case .unnamed: name = nil
        }
        if let name {
            if sqlState == "42P05" || sqlState == "0A000" {
                preparedNames[name] = Self.unusable
            } else if prepareFailed || sqlState == "26000" {
                preparedNames[name] = nil
            }
        }
        deadline = sent.isEmpty ? nil : answerTimeout.map { now + $0 }
        return entry.request
    }

    /// What a name that must not be prepared on this connection stands for: no request's text
    /// (SQL cannot hold a NUL), so its requests go unnamed.
    static var unusable: PGConnection.Statement.Key { PGConnection.Statement.Key(sql: "\u{0}", types: []) }

    /// The connection broke (EOF, a socket error, a protocol failure, the deadline): everything
    /// sent or held fails. The next request connects again at once.
    mutating func broken() -> [Request] {
        guard state == .ready || state == .connecting else { return [] }
        state = .idle
        deadline = nil
        preparedNames = [:]
        let failed = sent + held
        sent = []
        held = []
        return failed.map(\.request)
    }

    /// True when the next answer is overdue at `now`: the caller then breaks the connection with
    /// a `.timeout` error.
    func isOverdue(now: ContinuousClock.Instant) -> Bool {
        deadline.map { now >= $0 } ?? false
    }

    /// Closed for good: what was sent or held is returned to be failed; the connection (if any)
    /// is to be closed.
    mutating func close() -> [Request] {
        let failed = sent + held
        sent = []
        held = []
        preparedNames = [:]
        deadline = nil
        state = .closed
        return failed.map(\.request)
    }
}

extension PGPipelineStateMachine.Send: Equatable where Request: Equatable {}
