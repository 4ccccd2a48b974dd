/// What one non-blocking Redis connection is doing, as a value: the commands written to it and
/// not yet answered (in order), its state, and when its next reply is due. It performs no I/O
/// and knows no clock: the event loop feeds it events (connected, a reply, a failure, the time)
/// and carries out the action each returns. `Waiter` is whoever waits for a command's replies
/// (a continuation in the client, a plain value in tests).
///
/// Rules it holds:
/// - replies are matched to commands strictly in order; a reply nobody asked for is a protocol
///   failure that closes the connection;
/// - a connection with commands outstanding must make progress: when no reply arrived within
///   `commandTimeout` (counted from the first command written to an idle connection, then from
///   each reply), it closes and fails every waiting command, because a late reply would
///   otherwise be taken for the answer to the next command;
/// - at most `capacity` commands (pipelines count once) wait on it;
/// - a blocking command (`BLPOP`, `WAIT`…) is *exclusive*: it is accepted only by an idle
///   connection and, until answered, the connection accepts nothing else;
/// - once closed it stays closed (the client opens a new connection).
struct RedisConnectionStateMachine<Waiter> {
    enum State: Equatable, Sendable {
        /// The connect (TCP or TLS, `AUTH`, `SELECT`) is under way; commands are held.
        case connecting
        case ready
        case closed
    }

    struct Entry {
        let id: UInt64
        /// Nil once the caller was cancelled: its replies are still read, then dropped.
        var waiter: Waiter?
        /// How many replies complete it (the pipeline's length).
        let expected: Int
        var replies: [RedisReply] = []
        let exclusive: Bool
    }

    private(set) var state: State = .connecting
    private var entries = FIFO<Entry>()
    /// When the next reply is due (nil: nothing outstanding, or still connecting).
    private(set) var deadline: ContinuousClock.Instant?
    /// Close requested: accept nothing more, close once the last reply arrived.
    private(set) var draining = false
    private var exclusiveCount = 0
    let commandTimeout: Duration
    let capacity: Int

    init(commandTimeout: Duration, capacity: Int) {
        self.commandTimeout = commandTimeout
        self.capacity = max(1, capacity)
    }

    /// Commands (pipelines count once) waiting for replies.
    var outstanding: Int { entries.count }

    /// True when a command of this kind may be added now.
    func accepts(exclusive: Bool) -> Bool {
        state != .closed && !draining && exclusiveCount == 0 && entries.count < capacity
            && (!exclusive || entries.isEmpty)
    }

    enum SubmitAction: Equatable {
        /// Write the command's bytes now.
        case write
        /// Buffer its bytes; they go out once connected.
        case hold
        case refuse(RedisError)
    }

    /// A command whose bytes the caller appends to the connection's output (unless refused).
    mutating func submit(id: UInt64, waiter: Waiter, expected: Int, exclusive: Bool,
                         now: ContinuousClock.Instant) -> SubmitAction {
        guard accepts(exclusive: exclusive) else {
            if state == .closed || draining { return .refuse(.unavailable("connection is closed")) }
            return .refuse(.timeout("the Redis connection has \(entries.count) commands waiting (limit \(capacity))"))
        }
        entries.append(Entry(id: id, waiter: waiter, expected: max(1, expected), exclusive: exclusive))
        if exclusive { exclusiveCount += 1 }
        guard state == .ready else { return .hold }
        if entries.count == 1 { deadline = now + commandTimeout }
        return .write
    }

    enum ConnectedAction: Equatable {
        /// Register the descriptor and write what was held.
        case start
        /// Closed meanwhile: close the new descriptor at once.
        case discard
    }

    mutating func connected(now: ContinuousClock.Instant) -> ConnectedAction {
        guard state == .connecting else { return .discard }
        if draining && entries.isEmpty {
            state = .closed
            return .discard
        }
        state = .ready
        if !entries.isEmpty { deadline = now + commandTimeout }
        return .start
    }

    /// The connect failed, or the connection broke (EOF, reset, a bad reply): closed; returns
    /// the waiters to fail.
    mutating func failed() -> [Waiter] {
        state = .closed
        deadline = nil
        exclusiveCount = 0
        return entries.removeAll().compactMap(\.waiter)
    }

    enum ReplyAction {
        /// Part of a pipeline; more replies are due.
        case pending
        /// The head command is complete (its waiter is nil when it was cancelled); with
        /// `close`, the connection was draining and is now closed.
        case complete(Waiter?, [RedisReply], close: Bool)
        /// A reply nobody asked for: closed; fail these waiters.
        case unexpected([Waiter])
    }

    mutating func received(_ reply: RedisReply, now: ContinuousClock.Instant) -> ReplyAction {
        guard state == .ready, !entries.isEmpty else { return .unexpected(failed()) }
        let full = entries.withFirst { entry -> Bool in
            entry.replies.append(reply)
            return entry.replies.count >= entry.expected
        }
        deadline = now + commandTimeout
        guard full, let done = entries.popFirst() else { return .pending }
        if done.exclusive { exclusiveCount -= 1 }
        if entries.isEmpty { deadline = nil }
        let close = draining && entries.isEmpty
        if close { state = .closed }
        return .complete(done.waiter, done.replies, close: close)
    }

    /// The time passed: nil when nothing is late; else the connection is closed and these
    /// waiters fail with a timeout.
    mutating func tick(now: ContinuousClock.Instant) -> [Waiter]? {
        guard state == .ready, let deadline, now >= deadline else { return nil }
        return failed()
    }

    /// The caller of `id` was cancelled: its waiter, to resume with `CancellationError` (nil when
    /// not here). The command stays in line, since its reply will still come.
    mutating func cancel(id: UInt64) -> Waiter? {
        guard let index = entries.firstIndex(where: { $0.id == id }) else { return nil }
        return entries.withElement(at: index) { entry in
            defer { entry.waiter = nil }
            return entry.waiter
        }
    }

    enum CloseAction: Equatable {
        /// Nothing outstanding: close the descriptor now.
        case closeNow
        /// Close after the last outstanding reply (or connect, when still connecting).
        case drain
    }

    mutating func closeRequested() -> CloseAction {
        draining = true
        if state == .closed { return .closeNow }
        if entries.isEmpty && state == .ready {
            state = .closed
            return .closeNow
        }
        return .drain
    }
}

/// A first-in first-out queue over an array with a moving head (amortised O(1) at both ends).
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { head == storage.count }
    var first: Element? { isEmpty ? nil : storage[head] }

    mutating func append(_ element: Element) { storage.append(element) }

    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let element = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    mutating func withFirst<R>(_ body: (inout Element) -> R) -> R { body(&storage[head]) }

    /// Positions count from the head (0 is `first`).
    func firstIndex(where predicate: (Element) -> Bool) -> Int? {
        storage[head...].firstIndex(where: predicate).map { $0 - head }
    }

    mutating func withElement<R>(at index: Int, _ body: (inout Element) -> R) -> R { body(&storage[head + index]) }

    mutating func remove(at index: Int) -> Element { storage.remove(at: head + index) }

    /// Empties the queue, returning its elements in order.
    mutating func removeAll() -> [Element] {
        let all = Array(storage[head...])
        storage.removeAll()
        head = 0
        return all
    }
}
