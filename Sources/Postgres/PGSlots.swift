import Dispatch
import Synchronization

/// One pool position: a serial DispatchQueue (libdispatch threads, never Swift's cooperative
/// pool, so blocking libpq calls are fine there) and at most one connection confined to it.
final class PGSlot: @unchecked Sendable {
    // @unchecked Sendable is safe because `connection` is read and written only from blocks
    // running on `queue` (serial), and only the task holding the slot's lease enqueues blocks.
    let queue: DispatchQueue
    var connection: PGConnection?

    init(index: Int) {
        queue = DispatchQueue(label: "pixtrack.postgres.slot\(index)")
    }

    /// Runs `job` on the slot's queue and returns its result to the awaiting task.
    func run<T: Sendable>(_ job: @escaping @Sendable () throws -> T) async throws -> T {
        let box = PGJobBox(job)
        return try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: box.runOnce()) }
        }
    }
}

/// Holds a job until it runs, then forgets it *before* the result is handed back, so callers can
/// wrap non-escaping closures with `withoutActuallyEscaping` (the dispatch block that outlives
/// the resume retains only this box, not the closure).
final class PGJobBox<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable is safe because `job` is written once at init and taken exactly once,
    // by the one dispatch block that runs it.
    private var job: (@Sendable () throws -> T)?
    init(_ job: @escaping @Sendable () throws -> T) { self.job = job }

    func runOnce() -> Result<T, any Error> {
        guard let job else { return .failure(PGError(.queryFailed, "job ran twice")) }
        self.job = nil
        return Result { try job() }
    }
}

/// The lease bookkeeping of a fixed-size pool: idle slots, slots not yet created, and waiters
/// in FIFO order. Waiting honours task cancellation and the acquire timeout.
final class PGSlotPool: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<PGSlot, any Error>
    }

    private struct State {
        var idle: [PGSlot] = []
        var created = 0
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var closed = false
    }

    private enum Decision {
        case ready(PGSlot)
        case fail(any Error)
        case wait
    }

    let capacity: Int
    let acquireTimeout: Duration
    private let state = Mutex(State())

    init(capacity: Int, acquireTimeout: Duration) {
        self.capacity = max(1, capacity)
        self.acquireTimeout = acquireTimeout
    }

    /// Takes a slot: an idle one, a new one while below capacity, else the first one released.
    /// - Throws: `CancellationError`, `PGError` `.poolTimeout` or `.poolClosed`.
    func acquire() async throws -> PGSlot {
        try Task.checkCancellation()
        let id = state.withLock { s in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PGSlot, any Error>) in
                let decision: Decision = state.withLock { s in
                    if s.closed { return .fail(PGError(.poolClosed, "the pool is closed")) }
                    if let slot = s.idle.popLast() { return .ready(slot) }
                    if s.created < capacity {
                        s.created += 1
                        return .ready(PGSlot(index: s.created))
                    }
                    // Checked under the lock: a cancel handler that ran before we got here found
                    // no waiter to remove, and the task's cancelled flag is already set.
                    if Task.isCancelled { return .fail(CancellationError()) }
                    s.waiters.append(Waiter(id: id, continuation: continuation))
                    return .wait
                }
                switch decision {
                case .ready(let slot): continuation.resume(returning: slot)
                case .fail(let error): continuation.resume(throwing: error)
                case .wait:
                    let (sec, atto) = acquireTimeout.components
                    let nanos = max(0, Int(sec) * 1_000_000_000 + Int(atto / 1_000_000_000))
                    let timeout = PGError(.poolTimeout, "no PostgreSQL connection free within \(acquireTimeout) (pool of \(capacity))")
                    DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanos)) { [weak self] in
                        self?.removeWaiter(id, failing: timeout)
                    }
                }
            }
        } onCancel: {
            removeWaiter(id, failing: CancellationError())
        }
    }

    /// Returns a slot: to the first waiter, else to the idle list. After `close()` the caller
    /// gets `false` and must close the slot's connection itself.
    @discardableResult
    func release(_ slot: PGSlot) -> Bool {
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
    func close() -> [PGSlot] {
        let (idle, waiters): ([PGSlot], [Waiter]) = state.withLock { s in
            s.closed = true
            defer { s.idle = []; s.waiters = [] }
            return (s.idle, s.waiters)
        }
        for w in waiters { w.continuation.resume(throwing: PGError(.poolClosed, "the pool is closed")) }
        return idle
    }

    /// Slots created, idle, and tasks waiting.
    var counts: (created: Int, idle: Int, waiting: Int) {
        state.withLock { ($0.created, $0.idle.count, $0.waiters.count) }
    }

    private func removeWaiter(_ id: UInt64, failing error: any Error) {
        let waiter: Waiter? = state.withLock { s in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.continuation.resume(throwing: error)
    }
}
