import MetaCAPI
import Postgres
import RPC
import Synchronization

/// This instance's view of the `payment_events` log for its watchers (DESIGN §7). One reader
/// follows the table (woken by `LISTEN/NOTIFY`, `wakeUp()`; every `pollInterval` anyway) and
/// keeps the newest `ringSize` events in memory, so a thousand watchers that are caught up cost
/// one query per change, not a thousand. A watcher further behind than the ring reads the table
/// itself, page by page (`page(after:…)` says `.behind`). Memory: the ring, nothing per watcher.
public final class PaymentEventHub: Sendable {
    public struct Configuration: Sendable {
        public var ringSize = 4096
        /// Fallback read when no notification came (a lost LISTEN connection, say).
        public var pollInterval: Duration = .seconds(1)
        public var readBatch = 500
        public init() {}
    }

    public enum Page: Sendable {
        /// Every matching event after the cursor up to `through` (inclusive), in order.
        case events([PaymentEventRecord], through: PaymentEventPosition)
        /// The cursor is older than the ring: read the table up to `head` (nil: not loaded yet).
        case behind(head: PaymentEventPosition?)
    }

    private struct State {
        /// Events (floor, head], in order; `start` skips evicted entries.
        var ring: [PaymentEventRecord] = []
        var start = 0
        var floor = PaymentEventPosition.start
        var head = PaymentEventPosition.start
        var loaded = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        var task: Task<Void, Never>?
        var stopping = false
    }

    public let configuration: Configuration
    private let pool: PGPool
    private let logger: Logger
    private let wake = MetaWakeSignal()
    private let state = Mutex(State())
    private let appendedTotal = Atomic<Int>(0)

    public init(pool: PGPool, configuration: Configuration = Configuration(), logger: Logger = Logger()) {
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts the reader (idempotent).
    public func start() {
        state.withLock { s in
            guard s.task == nil, !s.stopping else { return }
            s.task = Task { [self] in await loop() }
        }
    }

    public func shutdown() async {
        let task = state.withLock { s -> Task<Void, Never>? in
            s.stopping = true
            return s.task
        }
        wake.signal()
        await task?.value
        resumeWaiters()
    }

    /// Something was (probably) appended: read now.
    public func wakeUp() { wake.signal() }

    /// The newest event this hub has read (`.start` before the first read).
    public var head: PaymentEventPosition { state.withLock { $0.head } }
    public var isLoaded: Bool { state.withLock { $0.loaded } }
    /// `shutdown()` began: watchers end (UNAVAILABLE) so the server can drain.
    public var isStopping: Bool { state.withLock { $0.stopping } }
    /// Events this hub has read from the table since it started.
    public var eventsRead: Int { appendedTotal.load(ordering: .relaxed) }

    private func loop() async {
        // Events that committed behind a transaction still running become readable when it
        // ends, and that end may notify nobody: while some wait, look again soon (10 ms,
        // doubling up to 100 ms) instead of at the next poll.
        var retry = Duration.milliseconds(10)
        while !state.withLock({ $0.stopping }) {
            var heldBack = false
            do {
                try await refresh()
                heldBack = try await pool.withConnection { try PaymentEventLog.hasHeldBack(on: $0) }
            } catch {
                logger.warning("payment_events_read_failed", ("error", String(describing: error)))
            }
            if heldBack {
                await wake.wait(timeout: min(retry, configuration.pollInterval))
                retry = min(retry * 2, .milliseconds(100))
            } else {
                retry = .milliseconds(10)
                await wake.wait(timeout: configuration.pollInterval)
            }
        }
    }

    /// Reads every event after the head into the ring and wakes the watchers. Public for tests.
    public func refresh() async throws {
        if !state.withLock({ $0.loaded }) {
            let head = try await pool.withConnection { try PaymentEventLog.head(on: $0) }
            state.withLock { s in
                if !s.loaded { s.loaded = true; s.floor = head; s.head = head }
            }
        }
        while true {
            let after = state.withLock { $0.head }
            let batch = configuration.readBatch
            let rows = try await pool.withConnection { try PaymentEventLog.read(after: after, limit: batch, on: $0) }
            guard !rows.isEmpty else { return }
            let ringSize = max(1, configuration.ringSize)
            state.withLock { s in
                guard s.head == after else { return }  // another refresh got there first
                s.ring.append(contentsOf: rows)
                s.head = rows[rows.count - 1].position
                let live = s.ring.count - s.start
                if live > ringSize {
                    let drop = live - ringSize
                    s.floor = s.ring[s.start + drop - 1].position
                    s.start += drop
                    if s.start > ringSize {
                        s.ring.removeFirst(s.start)
                        s.start = 0
                    }
                }
            }
            appendedTotal.add(rows.count, ordering: .relaxed)
            resumeWaiters()
            if rows.count < batch { return }
        }
    }

    /// Up to `limit` events after `cursor` (only `botID`'s unless 0), from memory.
    public func page(after cursor: PaymentEventPosition, botID: Int64, limit: Int) -> Page {
        state.withLock { s in
            guard s.loaded, cursor >= s.floor else { return .behind(head: s.loaded ? s.head : nil) }
            if cursor >= s.head { return .events([], through: s.head) }
            // First entry past the cursor (positions ascend).
            var lo = s.start, hi = s.ring.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if s.ring[mid].position <= cursor { lo = mid + 1 } else { hi = mid }
            }
            var out: [PaymentEventRecord] = []
            var i = lo
            while i < s.ring.count {
                let e = s.ring[i]
                if botID == 0 || e.botID == botID {
                    out.append(e)
                    if out.count == limit { return .events(out, through: e.position) }
                }
                i += 1
            }
            return .events(out, through: s.head)
        }
    }

    /// Returns once the head passes `cursor`, after `timeout`, on shutdown or cancellation.
    public func wait(beyond cursor: PaymentEventPosition, timeout: Duration) async {
        if state.withLock({ $0.head > cursor || $0.stopping }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.untilHead(beyond: cursor) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func untilHead(beyond cursor: PaymentEventPosition) async {
        let id = state.withLock { s -> UInt64 in s.nextWaiter += 1; return s.nextWaiter }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.head > cursor || s.stopping || Task.isCancelled { return true }
                    s.waiters[id] = k
                    return false
                }
                if now { k.resume() }
            }
        } onCancel: {
            let k = state.withLock { $0.waiters.removeValue(forKey: id) }
            k?.resume()
        }
    }

    private func resumeWaiters() {
        let all = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s.waiters.removeAll(keepingCapacity: true) }
            return Array(s.waiters.values)
        }
        for k in all { k.resume() }
    }
}
