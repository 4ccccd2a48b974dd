import Glibc
import Synchronization
import Testing
@testable import Leasing

/// `LeasePool` on its own: no connection behind the slots, nothing external. The pools of
/// PostgreSQL and Redis are built on it; these tests pin the bookkeeping they rely on.
@Suite struct LeasePoolTests {
    enum PoolError: Error, Equatable {
        case closed
        case timeout(waited: Duration, capacity: Int)
    }

    static func pool(capacity: Int, timeout: Duration = .seconds(30)) -> LeasePool<Int> {
        LeasePool(capacity: capacity, acquireTimeout: timeout, label: "test.lease",
                  errors: .init(closed: { PoolError.closed }, timeout: { PoolError.timeout(waited: $0, capacity: $1) }))
    }

    /// Polls `condition` every few milliseconds; false when it still does not hold after `limit`.
    static func eventually(within limit: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
        let end = ContinuousClock.now + limit
        while ContinuousClock.now < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return condition()
    }

    /// The error `task` ended with, or nil when it returned a slot.
    static func failure(of task: Task<LeaseSlot<Int>, any Error>) async -> (any Error)? {
        do {
            _ = try await task.value
            return nil
        } catch {
            return error
        }
    }

    @Test func anIdleSlotIsReusedBeforeANewOneIsMadeUpToCapacity() async throws {
        let pool = Self.pool(capacity: 3)
        let a = try await pool.acquire()
        #expect(pool.release(a))
        #expect(pool.counts == (created: 1, idle: 1, waiting: 0))
        // The idle slot is handed out again: no second one is made while one is free.
        let again = try await pool.acquire()
        #expect(again === a)
        #expect(pool.counts == (created: 1, idle: 0, waiting: 0))
        let b = try await pool.acquire()
        let c = try await pool.acquire()
        #expect(a !== b && b !== c && a !== c)
        #expect(pool.counts == (created: 3, idle: 0, waiting: 0))
        for s in [again, b, c] { pool.release(s) }
        #expect(pool.counts == (created: 3, idle: 3, waiting: 0))
    }

    @Test func aCapacityBelowOneStillLeasesOneSlot() async throws {
        let pool = Self.pool(capacity: 0)
        #expect(pool.capacity == 1)
        let slot = try await pool.acquire()
        #expect(pool.counts.created == 1)
        pool.release(slot)
    }

    @Test func waitersAreServedInArrivalOrder() async throws {
        let pool = Self.pool(capacity: 1)
        let held = try await pool.acquire()
        let served = Shared<[Int]>([])
        var tasks: [Task<Void, any Error>] = []
        for n in 1...6 {
            tasks.append(Task {
                let slot = try await pool.acquire()
                served.update { $0.append(n) }
                pool.release(slot)
            })
            // The next waiter arrives only once this one is queued.
            #expect(await Self.eventually { pool.counts.waiting == n }, "waiter \(n) never queued")
        }
        pool.release(held)
        for t in tasks { try await t.value }
        #expect(served.value == [1, 2, 3, 4, 5, 6])
        // Every release went to the next waiter: still one slot, idle now.
        #expect(pool.counts == (created: 1, idle: 1, waiting: 0))
    }

    @Test func aReleasedSlotGoesStraightToTheWaiter() async throws {
        let pool = Self.pool(capacity: 1)
        let held = try await pool.acquire()
        let waiter = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })
        pool.release(held)
        let slot = try await waiter.value
        #expect(slot === held)
        // Leased to the waiter, never parked as idle in between: a newcomer has to queue.
        #expect(pool.counts == (created: 1, idle: 0, waiting: 0))
        let newcomer = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })
        pool.release(slot)
        pool.release(try await newcomer.value)
        #expect(pool.counts == (created: 1, idle: 1, waiting: 0))
    }

    @Test func aCancelledWaiterLeavesTheQueueAtOnceAndTheNextOneIsServed() async throws {
        let pool = Self.pool(capacity: 1, timeout: .seconds(60))
        let held = try await pool.acquire()
        let first = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })
        let second = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 2 })

        let start = ContinuousClock.now
        first.cancel()
        let error = await Self.failure(of: first)
        #expect(error is CancellationError, "got \(String(describing: error))")
        // Well before the 60 s acquire timeout: the cancellation handler removed it.
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(pool.counts.waiting == 1)

        // The release skips the cancelled waiter: the second one gets the slot.
        pool.release(held)
        let slot = try await second.value
        #expect(slot === held)
        pool.release(slot)
        #expect(pool.counts == (created: 1, idle: 1, waiting: 0))
    }

    @Test func anAlreadyCancelledTaskGetsNoSlot() async throws {
        let pool = Self.pool(capacity: 2)
        let gate = Shared(false)
        let task = Task<LeaseSlot<Int>, any Error> {
            while !gate.value { try? await Task.sleep(for: .milliseconds(1)) }
            return try await pool.acquire()
        }
        task.cancel()
        gate.update { $0 = true }
        let error = await Self.failure(of: task)
        #expect(error is CancellationError, "got \(String(describing: error))")
        // Not even a slot was created for it, although one was free.
        #expect(pool.counts == (created: 0, idle: 0, waiting: 0))
    }

    @Test func aWaiterTimesOutWithThePoolsOwnErrorAndIsForgotten() async throws {
        let pool = Self.pool(capacity: 1, timeout: .milliseconds(200))
        let held = try await pool.acquire()
        let start = ContinuousClock.now
        let error = await Self.failure(of: Task { try await pool.acquire() })
        let waited = ContinuousClock.now - start
        #expect(error as? PoolError == .timeout(waited: .milliseconds(200), capacity: 1), "got \(String(describing: error))")
        #expect(waited >= .milliseconds(190) && waited < .seconds(10), "timed out after \(waited)")
        #expect(pool.counts.waiting == 0)
        // The timed-out waiter is not handed the slot later: it goes back to the idle list.
        pool.release(held)
        #expect(pool.counts == (created: 1, idle: 1, waiting: 0))
    }

    /// One timer serves all waiters: each still fails at its own deadline, not at the first one's,
    /// and one served early leaves the others' deadlines as they were.
    @Test func staggeredWaitersEachTimeOutAtTheirOwnDeadline() async throws {
        let pool = Self.pool(capacity: 1, timeout: .milliseconds(1500))
        let held = try await pool.acquire()
        let start = ContinuousClock.now
        let ended = Shared<[Int: Duration]>([:])
        var tasks: [Task<Void, Never>] = []
        for n in 0..<3 {
            tasks.append(Task {
                _ = try? await pool.acquire()
                ended.update { $0[n] = ContinuousClock.now - start }
            })
            #expect(await Self.eventually { pool.counts.waiting == n + 1 })
            if n < 2 { try await Task.sleep(for: .milliseconds(200)) }
        }
        // Waiter 0 got in first (t≈0), 1 at ≈200 ms, 2 at ≈400 ms: they fail at ≈1500, ≈1700, ≈1900 ms
        // (the 1.5 s timeout leaves room for a slow machine to queue all three before the first fails).
        for t in tasks { await t.value }
        let e = ended.value
        #expect(pool.counts.waiting == 0)
        for n in 0..<3 {
            let due = Duration.milliseconds(1500 + 200 * n)
            #expect((e[n] ?? .zero) >= due - .milliseconds(20), "waiter \(n) failed at \(String(describing: e[n])), before its \(due)")
            #expect((e[n] ?? .seconds(99)) < due + .seconds(8), "waiter \(n) failed at \(String(describing: e[n]))")
        }
        pool.release(held)
    }

    @Test func aWaiterServedBeforeItsTimeoutKeepsItsSlot() async throws {
        let pool = Self.pool(capacity: 1, timeout: .milliseconds(150))
        let held = try await pool.acquire()
        let waiter = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })
        pool.release(held)
        let slot = try await waiter.value
        // Past the timeout: the timer finds no waiter to fail, the lease stands.
        try await Task.sleep(for: .milliseconds(400))
        #expect(pool.counts == (created: 1, idle: 0, waiting: 0))
        pool.release(slot)
        #expect(pool.counts.idle == 1)
    }

    @Test func closeFailsWaitersRefusesNewLeasesAndHandsBackIdleSlots() async throws {
        let pool = Self.pool(capacity: 2)
        let a = try await pool.acquire()
        let b = try await pool.acquire()
        pool.release(b)
        let c = try await pool.acquire()  // b again
        #expect(c === b)
        let waiter = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })
        pool.release(c)  // goes to the waiter
        let d = try await waiter.value
        let late = Task { try await pool.acquire() }
        #expect(await Self.eventually { pool.counts.waiting == 1 })

        pool.release(d)  // to `late`
        let e = try await late.value
        #expect(pool.release(e))
        let idle = pool.close()
        #expect(idle.count == 1 && idle[0] === b)
        #expect(await Self.failure(of: Task { try await pool.acquire() }) as? PoolError == .closed)
        // After close a returned slot is the caller's to close.
        #expect(!pool.release(a))
        #expect(pool.counts.idle == 0)
    }

    @Test func closeFailsQueuedWaiters() async throws {
        let pool = Self.pool(capacity: 1)
        let held = try await pool.acquire()
        let waiters = (0..<3).map { _ in Task { try await pool.acquire() } }
        #expect(await Self.eventually { pool.counts.waiting == 3 })
        #expect(pool.close().isEmpty)
        for w in waiters { #expect(await Self.failure(of: w) as? PoolError == .closed) }
        #expect(!pool.release(held))
    }

    @Test func aSlotRunsJobsOneAtATimeOnItsQueue() async throws {
        let pool = Self.pool(capacity: 1)
        let slot = try await pool.acquire()
        let load = Shared((inside: 0, most: 0))
        try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 0..<16 {
                group.addTask {
                    try await slot.run {
                        load.update { $0.inside += 1; $0.most = max($0.most, $0.inside) }
                        usleep(300)
                        load.update { $0.inside -= 1 }
                        return n * 2
                    }
                }
            }
            var sum = 0
            for try await v in group { sum += v }
            #expect(sum == (0..<16).reduce(0) { $0 + $1 * 2 })
        }
        #expect(load.value.most == 1)
        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await slot.run { () throws -> Int in throw Refused() } }
        pool.release(slot)
    }

    @Test func aJobBoxRunsItsJobOnce() {
        let runs = Shared(0)
        let box = JobBox { runs.update { $0 += 1 }; return runs.value }
        #expect((try? box.runOnce().get()) == 1)
        if case .failure(let e) = box.runOnce() {
            #expect(e as? LeaseError == .jobRanTwice)
        } else {
            Issue.record("a second run must fail")
        }
        #expect(runs.value == 1)
    }
}

/// A value several tasks read and change under a lock.
final class Shared<T: Sendable>: Sendable {
    private let state: Mutex<T>
    init(_ value: T) { state = Mutex(value) }
    var value: T { state.withLock { $0 } }
    func update(_ change: (inout T) -> Void) { state.withLock { change(&$0) } }
}
