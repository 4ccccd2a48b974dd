import Glibc
import Postgres
import RPC
import Synchronization

/// Limits and timing of `WatchPayments` streams (`PIXTRACK_WATCH_*`).
public struct PaymentWatchConfiguration: Sendable {
    /// Open watches in this process.
    public var maxWatches = 10_000
    /// Open watches per client connection.
    public var maxPerConnection = 16
    /// An idle stream gets a heartbeat event this often.
    public var heartbeat: Duration = .seconds(15)
    /// A watcher that leaves its stream's backlog (256 KiB) unread this long is cut off with
    /// RESOURCE_EXHAUSTED; it resumes from its last cursor.
    public var stallTimeout: Duration = .seconds(10)
    /// Events per table read while catching up.
    public var pageSize = 256
    public init() {}
}

/// The watches of this process: admission (global and per-connection limits) and the stream
/// loop — replay from the table, then live from the hub, one cursor throughout, so the switch
/// can neither skip nor repeat an event.
public final class PaymentWatchers: Sendable {
    public let configuration: PaymentWatchConfiguration
    private let hub: PaymentEventHub
    private let pool: PGPool
    private let open = Mutex<(total: Int, byConnection: [String: Int])>((0, [:]))
    private let cutOff = Atomic<Int>(0)

    public init(hub: PaymentEventHub, pool: PGPool, configuration: PaymentWatchConfiguration = PaymentWatchConfiguration()) {
        self.hub = hub
        self.pool = pool
        self.configuration = configuration
    }

    /// Watches open now.
    public var openCount: Int { open.withLock { $0.total } }
    /// Watchers cut off for not reading.
    public var cutOffCount: Int { cutOff.load(ordering: .relaxed) }

    /// Streams events (encoded `pixtrack.v1.PaymentEvent`s) to `send` until cancelled or failed.
    /// - Parameters:
    ///   - connection: identifies the client connection (its `ip:port`) for the per-connection limit.
    /// - Throws: `RPCError` INVALID_ARGUMENT (cursor), RESOURCE_EXHAUSTED (limits, a stalled
    ///   reader), UNAVAILABLE (database); `CancellationError` when the call ends.
    public func watch(botID: Int64, afterCursor: String, connection: String,
                      send: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        guard botID >= 0 else { throw RPCError(.invalidArgument, "bot_id must be 0 (every bot) or a bot id") }
        var requested: PaymentEventPosition?
        if !afterCursor.isEmpty {
            guard let c = PaymentEventCursor.parse(afterCursor) else {
                throw RPCError(.invalidArgument, "after_cursor is not a cursor this server issued")
            }
            requested = c
        }
        try admit(connection)
        defer { release(connection) }

        let dbHead = try await storage { try PaymentEventLog.head(on: $0) }
        var cursor: PaymentEventPosition
        if let requested {
            guard requested <= dbHead else { throw RPCError(.invalidArgument, "after_cursor \(requested) is ahead of the event log (newest readable: \(dbHead))") }
            cursor = requested
        } else {
            cursor = dbHead
        }
        var lastSent = ContinuousClock.now
        let limit = max(1, configuration.pageSize)
        while true {
            try Task.checkCancellation()
            if hub.isStopping { throw RPCError(.unavailable, "server shutting down; resume from the last cursor") }
            var events: [PaymentEventRecord]
            var through: PaymentEventPosition
            switch hub.page(after: cursor, botID: botID, limit: limit) {
            case .events(let list, let t):
                (events, through) = (list, t)
            case .behind(let known):
                let head: PaymentEventPosition
                if let known { head = known } else { head = try await storage { try PaymentEventLog.head(on: $0) } }
                let from = cursor
                events = try await storage { try PaymentEventLog.read(after: from, upTo: head, botID: botID, limit: limit, on: $0) }
                through = events.count < limit ? max(head, cursor) : events[events.count - 1].position
            }
            for e in events {
                try await sendBounded(e.encoded(), send)
                cursor = e.position
                lastSent = .now
            }
            cursor = max(cursor, through)
            if !events.isEmpty { continue }
            let quiet = ContinuousClock.now - lastSent
            if quiet >= configuration.heartbeat {
                try await sendBounded(PaymentEventRecord.heartbeat(cursor: cursor, atMs: Self.nowMs()), send)
                lastSent = .now
                continue
            }
            await hub.wait(beyond: cursor, timeout: configuration.heartbeat - quiet)
        }
    }

    private func storage<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        do {
            return try await pool.withConnection(body)
        } catch let e as PGError {
            throw RPCError(.unavailable, "event log unavailable", cause: e)
        }
    }

    /// `send`, but a watcher that takes nothing for `stallTimeout` is cut off: the transport's
    /// send waits while the stream's backlog is full, and that wait must not hold the watch.
    private func sendBounded(_ bytes: [UInt8], _ send: @escaping @Sendable ([UInt8]) async throws -> Void) async throws {
        let gate = SendGate()
        let sender = Task {
            do { try await send(bytes); gate.resolve(.sent) } catch { gate.resolve(.failed(error)) }
        }
        let timer = Task {
            try? await Task.sleep(for: configuration.stallTimeout)
            gate.resolve(.stalled)
        }
        let outcome = await withTaskCancellationHandler {
            await gate.wait()
        } onCancel: {
            gate.resolve(.failed(CancellationError()))
        }
        timer.cancel()
        switch outcome {
        case .sent: return
        case .failed(let error):
            sender.cancel()
            throw error
        case .stalled:
            cutOff.add(1, ordering: .relaxed)
            throw RPCError(.resourceExhausted, "watcher too slow: nothing read for \(configuration.stallTimeout); resume from the last cursor")
        }
    }

    private func admit(_ connection: String) throws {
        let max = configuration.maxWatches, perConnection = configuration.maxPerConnection
        let refusal = open.withLock { o -> String? in
            if o.total >= max { return "too many open watches on this server (\(max)); retry later" }
            if o.byConnection[connection, default: 0] >= perConnection {
                return "too many open watches on this connection (\(perConnection))"
            }
            o.total += 1
            o.byConnection[connection, default: 0] += 1
            return nil
        }
        if let refusal { throw RPCError(.resourceExhausted, refusal) }
    }

    private func release(_ connection: String) {
        open.withLock { o in
            o.total -= 1
            let n = o.byConnection[connection, default: 1] - 1
            o.byConnection[connection] = n > 0 ? n : nil
        }
    }

    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// First of: the send finished, it failed, or the stall timer fired.
private final class SendGate: Sendable {
    enum Outcome: Sendable { case sent, failed(any Error), stalled }
    private let state = Mutex<(outcome: Outcome?, waiter: CheckedContinuation<Outcome, Never>?)>((nil, nil))

    func resolve(_ o: Outcome) {
        let k = state.withLock { s -> CheckedContinuation<Outcome, Never>? in
            guard s.outcome == nil else { return nil }
            s.outcome = o
            defer { s.waiter = nil }
            return s.waiter
        }
        k?.resume(returning: o)
    }

    func wait() async -> Outcome {
        await withCheckedContinuation { (k: CheckedContinuation<Outcome, Never>) in
            let ready = state.withLock { s -> Outcome? in
                if let o = s.outcome { return o }
                s.waiter = k
                return nil
            }
            if let ready { k.resume(returning: ready) }
        }
    }
}
