import Dispatch
import Synchronization

/// The lease machinery shared by the blocking C-library pools (PostgreSQL, Redis): a fixed set
/// of slots, each a serial DispatchQueue holding at most one connection, leased to one task at a
/// time, with FIFO waiters, cancellation and an acquire timeout.

/// One pool position: a serial DispatchQueue (libdispatch threads, never Swift's cooperative
/// pool, so blocking C calls are fine there) and at most one connection confined to it.
public final class LeaseSlot<Connection>: @unchecked Sendable {
    // @unchecked Sendable is safe because `connection` is read and written only from blocks
    // running on `queue` (serial), and only the task holding the slot's lease enqueues blocks.
    public let queue: DispatchQueue
    public var connection: Connection?

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Runs `job` on the slot's queue and returns its result to the awaiting task.
    public func run<T: Sendable>(_ job: @escaping @Sendable () throws -> T) async throws -> T {
        let box = JobBox(job)
        return try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: box.runOnce()) }
        }
    }
}

/// Holds a job until it runs, then forgets it *before* the result is handed back, so callers can
/// wrap non-escaping closures with `withoutActuallyEscaping` (the dispatch block that outlives
/// the resume retains only this box, not the closure).
final class JobBox<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable is safe because `job` is written once at init and taken exactly once,
    // by the one dispatch block that runs it.
    private var job: (@Sendable () throws -> T)?
    init(_ job: @escaping @Sendable () throws -> T) { self.job = job }

    func runOnce() -> Result<T, any Error> {
        guard let job else { return .failure(LeaseError.jobRanTwice) }
        self.job = nil
        return Result { try job() }
    }
}

/// A job handed to a slot was run a second time (a bug, never expected).
public enum LeaseError: Error, Sendable {
    case jobRanTwice
}

/// The lease bookkeeping of a fixed-size pool: idle slots, slots not yet created, and waiters
/// in FIFO order. Waiting honours task cancellation and the acquire timeout.
public final class LeasePool<Connection>: Sendable {
    public typealias Slot = LeaseSlot<Connection>

    /// The pool's own errors, in the wrapping library's error type.
    public struct Errors: Sendable {
        /// Thrown to waiters and new acquirers once the pool is closed.
        public var closed: @Sendable () -> any Error
        /// Thrown when no slot frees up within the acquire timeout.
        public var timeout: @Sendable (_ waited: Duration, _ capacity: Int) -> any Error

        public init(closed: @escaping @Sendable () -> any Error,
                    timeout: @escaping @Sendable (_ waited: Duration, _ capacity: Int) -> any Error) {
            self.closed = closed
            self.timeout = timeout
        }
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Slot, any Error>
        /// When its acquire timeout fails it (`DispatchTime` nanoseconds).
        let deadline: UInt64
    }

    private struct State {
        var idle: [Slot] = []
        var created = 0
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var closed = false
        /// One timer serves every waiter: armed for the earliest deadline while anyone waits.
        var timerArmed = false
    }

    private enum Decision {
        case ready(Slot)
        case fail(any Error)
        /// Waiting; `arm`: no timer runs yet, start one for this deadline.
        case wait(arm: UInt64?)
    }

    public let capacity: Int
    public let acquireTimeout: Duration
    private let label: String
    private let errors: Errors
    private let state = Mutex(State())

    /// - Parameter label: names the slots' queues (`label.slotN`).
    public init(capacity: Int, acquireTimeout: Duration, label: String, errors: Errors) {
        self.capacity = max(1, capacity)
        self.acquireTimeout = acquireTimeout
        self.label = label
        self.errors = errors
    }

    /// Takes a slot: an idle one, a new one while below capacity, else the first one released.
    /// - Throws: `CancellationError`, or the pool's `errors.timeout` / `errors.closed`.
    public func acquire() async throws -> Slot {
        try Task.checkCancellation()
        let id = state.withLock { s in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Slot, any Error>) in
                let decision: Decision = state.withLock { s in
                    if s.closed { return .fail(errors.closed()) }
                    if let slot = s.idle.popLast() { return .ready(slot) }
                    if s.created < capacity {
                        s.created += 1
                        return .ready(Slot(label: "\(label).slot\(s.created)"))
                    }
                    // Checked under the lock: a cancel handler that ran before we got here found
                    // no waiter to remove, and the task's cancelled flag is already set.
                    if Task.isCancelled { return .fail(CancellationError()) }
                    let deadline = DispatchTime.now().uptimeNanoseconds &+ timeoutNanos
                    s.waiters.append(Waiter(id: id, continuation: continuation, deadline: deadline))
                    if s.timerArmed { return .wait(arm: nil) }
                    s.timerArmed = true
                    return .wait(arm: deadline)
                }
                switch decision {
                case .ready(let slot): continuation.resume(returning: slot)
                case .fail(let error): continuation.resume(throwing: error)
                case .wait(let arm): if let arm { armTimer(for: arm) }
                }
            }
        } onCancel: {
            removeWaiter(id, failing: CancellationError())
        }
    }

    /// Returns a slot: to the first waiter, else to the idle list. After `close()` the caller
    /// gets `false` and must close the slot's connection itself.
    @discardableResult
    public func release(_ slot: Slot) -> Bool {
        let (kept, next): (Bool, Waiter?) = state.withLock { s in
            if s.closed { return (false, nil) }
            if s.waiters.isEmpty {
                s.idle.append(slot)
                return (true, nil)
            }
            return (true, s.waiters.removeFirst())
        }
        next?.continuation.resume(returning: slot)
        return kept
    }

    /// Refuses new leases, fails the waiters and returns the idle slots for closing.
    public func close() -> [Slot] {
        let (idle, waiters): ([Slot], [Waiter]) = state.withLock { s in
            s.closed = true
            defer { s.idle = []; s.waiters = [] }
            return (s.idle, s.waiters)
        }
        for w in waiters { w.continuation.resume(throwing: errors.closed()) }
        return idle
    }

    /// Slots created, idle, and tasks waiting.
    public var counts: (created: Int, idle: Int, waiting: Int) {
        state.withLock { ($0.created, $0.idle.count, $0.waiters.count) }
    }

    /// The acquire timeout in nanoseconds (bounded: a timeout of years waits "for ever").
    private var timeoutNanos: UInt64 {
        let (sec, atto) = acquireTimeout.components
        return UInt64(clamping: max(0, min(sec, 1 << 32))) * 1_000_000_000 + UInt64(clamping: max(0, atto / 1_000_000_000))
    }

    /// Fails the waiters whose deadline is at `deadline` or before, when it comes. Waiters join
    /// in deadline order, so a pool under load runs one timer per timeout period, not one per
    /// wait (a dispatch timer per waiter cost ~6% of a saturated payment server's CPU).
    private func armTimer(for deadline: UInt64) {
        DispatchQueue.global().asyncAfter(deadline: DispatchTime(uptimeNanoseconds: deadline)) { [weak self] in
            self?.expireWaiters()
        }
    }

    /// The timer fired: fail who is past due, then arm for the earliest deadline left.
    private func expireWaiters() {
        let now = DispatchTime.now().uptimeNanoseconds
        let (expired, next): ([Waiter], UInt64?) = state.withLock { s in
            var expired: [Waiter] = []
            s.waiters.removeAll { w in
                guard w.deadline <= now else { return false }
                expired.append(w)
                return true
            }
            let next = s.waiters.lazy.map(\.deadline).min()
            s.timerArmed = next != nil
            return (expired, next)
        }
        if !expired.isEmpty {
            let timeout = errors.timeout(acquireTimeout, capacity)
            for w in expired { w.continuation.resume(throwing: timeout) }
        }
        if let next { armTimer(for: next) }
    }

    private func removeWaiter(_ id: UInt64, failing error: any Error) {
        let waiter: Waiter? = state.withLock { s in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.continuation.resume(throwing: error)
    }
}
