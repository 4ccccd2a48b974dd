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
/// - once closed it stays closed.
struct PGPipelineStateMachine<Request> {
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
    private var sent: [Request] = []
    /// Held while connecting, in arrival order.
    private var held: [Request] = []
    /// When the next answer is due (nil: nothing outstanding).
    private(set) var deadline: ContinuousClock.Instant?
    /// Until when requests are refused after a failed connect.
    private(set) var downUntil: ContinuousClock.Instant?
    /// Nil: no client-side deadline (`statement_timeout` off, as `PGConnection` has it).
    let answerTimeout: Duration?
    let backoff: Duration
    let capacity: Int

    init(answerTimeout: Duration?, backoff: Duration, capacity: Int) {
        self.answerTimeout = answerTimeout
        self.backoff = backoff
        self.capacity = max(1, capacity)
    }

    /// Requests sent and not yet answered.
    var outstanding: Int { sent.count }
    /// Requests held while connecting.
    var waiting: Int { held.count }

    enum SubmitAction {
        /// Write it to the connection now.
        case send(Request)
        /// Held: start a connect (the first request of an idle connection).
        case connect
        /// Held until the connect under way ends.
        case hold
        /// Answer it with this error at once.
        case refuse(Request, PGError)
    }

    mutating func submit(_ request: Request, now: ContinuousClock.Instant) -> SubmitAction {
        switch state {
        case .closed:
            return .refuse(request, PGError(.poolClosed, "the PostgreSQL pipeline is closed"))
        case _ where sent.count + held.count >= capacity:
            return .refuse(request, PGError(.poolTimeout, "too many PostgreSQL statements waiting (\(capacity))"))
        case .ready:
            if sent.isEmpty { deadline = answerTimeout.map { now + $0 } }
            sent.append(request)
            return .send(request)
        case .connecting:
            held.append(request)
            return .hold
        case .idle:
            if let downUntil, now < downUntil {
                return .refuse(request, PGError(.unavailable, "PostgreSQL is down (a recent connect failed); not retrying yet"))
            }
            downUntil = nil
            held.append(request)
            state = .connecting
            return .connect
        }
    }

    /// The connect succeeded: what was held is to be sent, in order.
    mutating func connected(now: ContinuousClock.Instant) -> [Request] {
        guard state == .connecting else { return [] }
        state = .ready
        let toSend = held
        held = []
        sent = toSend
        deadline = toSend.isEmpty ? nil : answerTimeout.map { now + $0 }
        return toSend
    }

    /// The connect failed: what was held fails with it, and requests are refused for `backoff`.
    mutating func connectFailed(now: ContinuousClock.Instant) -> [Request] {
        guard state == .connecting else { return [] }
        state = .idle
        downUntil = backoff > .zero ? now + backoff : nil
        let failed = held
        held = []
        return failed
    }

    /// The oldest sent request got its whole answer (its results and its Sync).
    /// Nil when nothing was outstanding: the caller treats that as a protocol failure.
    mutating func answered(now: ContinuousClock.Instant) -> Request? {
        guard !sent.isEmpty else { return nil }
        let request = sent.removeFirst()
        deadline = sent.isEmpty ? nil : answerTimeout.map { now + $0 }
        return request
    }

    /// The connection broke (EOF, a socket error, a protocol failure, the deadline): everything
    /// sent or held fails. The next request connects again at once.
    mutating func broken() -> [Request] {
        guard state == .ready || state == .connecting else { return [] }
        state = .idle
        deadline = nil
        let failed = sent + held
        sent = []
        held = []
        return failed
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
        deadline = nil
        state = .closed
        return failed
    }
}
