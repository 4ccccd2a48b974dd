import Postgres
import Synchronization

/// Group commit for the outbox: concurrent single-event enqueues (one per click) share one
/// multi-row INSERT, hence one commit and one fsync, instead of one transaction each.
///
/// Natural batching, no timers: when fewer than `maxInFlight` batches are being written, a
/// request starts a batch at once (no added latency when idle); requests arriving while the
/// writers are busy wait in `pending` and the next free writer takes up to `maxBatchSize` of them
/// in arrival order. `enqueue` returns only after the commit that holds its event, so the event
/// is as durable as with `MetaOutbox.enqueue(_:pool:)`.
///
/// Every accepted request is answered exactly once, with its own outcome:
/// - duplicates keep the first, as a single insert did: the earliest request of a batch for a
///   (pixel, event_name, event_id) is the candidate, later ones in the same batch get `false`;
/// - a failed batch fails every request in it with the batch's error; the next batch is tried
///   afresh. When the statement itself was refused (bad data, not an unavailable server), the
///   batch's events are retried one by one on the same connection, so one bad event cannot fail
///   the clicks that happened to share its batch;
/// - batches run in their own tasks: a cancelled caller still gets the real outcome (its event
///   may already be on the wire, and an accepted event is never silently dropped). Shutdown needs
///   no step of its own: a closed pool fails the batches still waiting (`PGError` `.poolClosed`).
public final class MetaOutboxBatcher: Sendable {
    /// Counters, for tests and metrics.
    public struct Statistics: Sendable, Equatable {
        /// Batches written (committed or failed) so far.
        public var batches = 0
        /// Batches that failed as a whole.
        public var failedBatches = 0
        /// Requests answered so far.
        public var events = 0
        /// Requests waiting for a writer.
        public var pending = 0
        /// Batches being written now.
        public var inFlight = 0
        /// Pipelined batches whose plain INSERT met a key already queued and were written again
        /// keeping the queued row.
        public var conflictRetries = 0
    }

    private struct Waiter {
        let event: MetaEvent
        let continuation: CheckedContinuation<Bool, any Error>
    }

    private struct State {
        var pending: [Waiter] = []
        var statistics = Statistics()

        /// Takes the next batch: the oldest `max` waiters.
        mutating func take(_ max: Int) -> [Waiter] {
            let n = min(max, pending.count)
            defer { pending.removeFirst(n) }
            return Array(pending.prefix(n))
        }
    }

    private let pool: PGPool
    /// When set, batches go out on this non-blocking pipelined connection (hosted on an HTTP
    /// event loop in `pixtrackd`) instead of a pooled blocking one.
    let pipeline: PGPipelineLoop?
    private let maxBatchSize: Int
    private let maxInFlight: Int
    private let state = Mutex(State())
    /// Pipelined batches still to be written with `ON CONFLICT` first, after a plain INSERT met
    /// a queued key: a caller that repeats event ids costs one failed INSERT per this many
    /// batches, not one per batch.
    private let keepQueuedBatchesLeft = Atomic<Int>(0)
    static let keepQueuedAfterConflict = 64

    /// - Parameters:
    ///   - maxBatchSize: the most events in one INSERT (6 parameters each).
    ///   - maxInFlight: the most batches written at once (each holds one pooled connection).
    ///     One by default: clicks that arrive during an INSERT all go in the next one, so under
    ///     load the batches are larger and a click costs less (measured on `/go` under wrk: 68–90
    ///     µs of CPU per click with one writer, 78–100 with two; p99 9–11 ms against 11–17).
    ///   - pipeline: write the batches on this connection (see `pipeline`); nil: on `pool`'s.
    public init(pool: PGPool, pipeline: PGPipelineLoop? = nil, maxBatchSize: Int = 256, maxInFlight: Int = 1) {
        self.pool = pool
        self.pipeline = pipeline
        self.maxBatchSize = max(1, min(maxBatchSize, 10_000))
        self.maxInFlight = max(1, maxInFlight)
    }

    /// Queues `event` durably (committed when this returns).
    /// - Returns: true when it was new, false for a duplicate (already queued, or an earlier
    ///   request of the same batch carried the same key).
    /// - Throws: the `PGError` of the batch that held the event (`.unavailable`, `.poolTimeout`,
    ///   `.poolClosed`, `.timeout`, …), or of the event itself when the batch was refused.
    @discardableResult
    public func enqueue(_ event: MetaEvent) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            let batch: [Waiter]? = state.withLock { s in
                s.pending.append(Waiter(event: event, continuation: continuation))
                guard s.statistics.inFlight < maxInFlight else {
                    s.statistics.pending = s.pending.count
                    return nil
                }
                s.statistics.inFlight += 1
                let batch = s.take(maxBatchSize)
                s.statistics.pending = s.pending.count
                return batch
            }
            guard let batch else { return }
            if let pipeline {
                write(batch, on: pipeline)
            } else {
                Task { await self.drain(startingWith: batch) }
            }
        }
    }

    /// A snapshot of the counters.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// One writer: writes `batch`, answers its waiters, then takes the next pending batch until
    /// none is left. Every waiter it took is resumed exactly once.
    ///
    /// The writer keeps its pooled connection from batch to batch and answers each batch's
    /// waiters from the connection's thread: under load a batch costs one round trip and no
    /// lease, queue hop or task switch of its own. A connection that broke is given back and the
    /// next batch gets a fresh one.
    private func drain(startingWith first: [Waiter]) async {
        var batch: [Waiter]? = first
        while let current = batch {
            do {
                batch = try await pool.withConnection { connection -> [Waiter]? in
                    var writing = current
                    while true {
                        let outcomes = self.write(writing.map(\.event), on: connection)
                        guard let next = self.finish(writing, outcomes) else { return nil }
                        guard connection.isUsable else { return next }
                        writing = next
                    }
                }
            } catch {
                // No connection for this batch (pool closed or timed out, PostgreSQL down).
                batch = finish(current, .failure(Self.pgError(error)))
            }
        }
    }

    /// Counts a written batch, answers its waiters, and takes the next batch (nil: none is
    /// pending, and this writer is done).
    private func finish(_ batch: [Waiter], _ outcomes: Result<[Result<Bool, PGError>], PGError>) -> [Waiter]? {
        let next: [Waiter]? = state.withLock { s in
            s.statistics.batches += 1
            s.statistics.events += batch.count
            if case .failure = outcomes { s.statistics.failedBatches += 1 }
            if s.pending.isEmpty {
                s.statistics.inFlight -= 1
                return nil
            }
            let next = s.take(maxBatchSize)
            s.statistics.pending = s.pending.count
            return next
        }
        switch outcomes {
        case .success(let results):
            for (waiter, result) in zip(batch, results) { waiter.continuation.resume(with: result) }
        case .failure(let error):
            for waiter in batch { waiter.continuation.resume(throwing: error) }
        }
        return next
    }

    /// Writes one batch on `connection`: the whole batch's failure, or one outcome per event (in
    /// order).
    private func write(_ events: [MetaEvent], on connection: PGConnection) -> Result<[Result<Bool, PGError>], PGError> {
        let (firstIndex, candidates) = Self.candidates(events)
        do {
            let inserted = try MetaOutbox.enqueueReturningNew(candidates, on: connection)
            return .success(Self.outcomes(events, firstIndex, inserted: inserted))
        } catch let error as PGError where candidates.count > 1 && Self.isStatementRefusal(error) && connection.isUsable {
            // Isolate the bad event: each candidate alone, as the single insert did.
            var single: [MetaEvent.Key: Result<Bool, PGError>] = [:]
            for e in candidates {
                do {
                    single[e.key] = .success(try MetaOutbox.enqueue([e], on: connection) == 1)
                } catch {
                    single[e.key] = .failure(Self.pgError(error))
                }
            }
            return .success(Self.outcomes(events, firstIndex, single: single))
        } catch {
            return .failure(Self.pgError(error))
        }
    }

    /// Writes one batch on the pipelined connection, answers it from the connection's thread
    /// and goes on with the next batch from there. The same outcomes as the pooled path: a
    /// refused statement is retried event by event (those statements travel in one pipeline).
    ///
    /// The usual batch, all new events, goes as a plain prepared INSERT: PostgreSQL neither
    /// parses and plans it again nor probes the unique index before each row (measured on the
    /// outbox table: about a third less server CPU per row than the unnamed `ON CONFLICT`
    /// form). When a key was already queued that INSERT fails whole (SQLSTATE 23505) and the
    /// batch is written again with `ON CONFLICT DO NOTHING RETURNING`, which keeps the queued
    /// row and tells which events were new; the next `keepQueuedAfterConflict` batches go that
    /// way at once.
    private func write(_ batch: [Waiter], on pipeline: PGPipelineLoop) {
        let events = batch.map(\.event)
        let (firstIndex, candidates) = Self.candidates(events)
        guard plainInsertFirst() else { return writeKeepingQueued(batch, events, firstIndex, candidates, on: pipeline) }
        let (name, sql, params) = MetaOutbox.plainBatchInsert(candidates)
        pipeline.submit(sql, params, preparedAs: name) { result in
            switch result {
            case .success:
                self.written(batch, .success(Self.allCandidatesNew(events, firstIndex, candidates: candidates.count)), on: pipeline)
            case .failure(let error) where error.sqlState == "23505":
                self.keepQueuedBatchesLeft.store(Self.keepQueuedAfterConflict, ordering: .relaxed)
                self.state.withLock { $0.statistics.conflictRetries += 1 }
                self.writeKeepingQueued(batch, events, firstIndex, candidates, on: pipeline)
            case .failure(let error):
                self.refused(batch, events, firstIndex, candidates, error, on: pipeline)
            }
        }
    }

    /// Whether the next pipelined batch tries the plain INSERT (no recent conflict).
    private func plainInsertFirst() -> Bool {
        guard keepQueuedBatchesLeft.load(ordering: .relaxed) > 0 else { return true }
        keepQueuedBatchesLeft.subtract(1, ordering: .relaxed)
        return false
    }

    /// Writes a pipelined batch with `ON CONFLICT DO NOTHING RETURNING`: what was queued stays.
    private func writeKeepingQueued(_ batch: [Waiter], _ events: [MetaEvent], _ firstIndex: [MetaEvent.Key: Int],
                                    _ candidates: [MetaEvent], on pipeline: PGPipelineLoop) {
        let (sql, params) = MetaOutbox.batchInsert(candidates)
        pipeline.submit(sql, params) { result in
            switch result {
            case .success(let rows):
                let outcomes: Result<[Result<Bool, PGError>], PGError>
                do {
                    // The usual batch: the INSERT's count says every candidate was new, so the
                    // returned keys need not be read (nor hashed) to tell which.
                    outcomes = rows.affectedRows == candidates.count
                        ? .success(Self.allCandidatesNew(events, firstIndex, candidates: candidates.count))
                        : .success(Self.outcomes(events, firstIndex, inserted: try MetaOutbox.insertedKeys(rows)))
                } catch {
                    outcomes = .failure(Self.pgError(error))
                }
                self.written(batch, outcomes, on: pipeline)
            case .failure(let error):
                self.refused(batch, events, firstIndex, candidates, error, on: pipeline)
            }
        }
    }

    /// A pipelined batch's INSERT failed with `error`: a statement the server refused (bad data)
    /// is retried event by event, each keeping what is queued (those statements travel in one
    /// pipeline); any other failure fails the batch.
    private func refused(_ batch: [Waiter], _ events: [MetaEvent], _ firstIndex: [MetaEvent.Key: Int],
                         _ candidates: [MetaEvent], _ error: PGError, on pipeline: PGPipelineLoop) {
        guard candidates.count > 1 && Self.isStatementRefusal(error) else { return written(batch, .failure(error), on: pipeline) }
        let singles = SingleOutcomes(expected: candidates.count)
        for e in candidates {
            let (sql, params) = MetaOutbox.batchInsert([e])
            pipeline.submit(sql, params) { one in
                guard let all = singles.record(e.key, one.map { $0.affectedRows == 1 }) else { return }
                self.written(batch, .success(Self.outcomes(events, firstIndex, single: all)), on: pipeline)
            }
        }
    }

    private func written(_ batch: [Waiter], _ outcomes: Result<[Result<Bool, PGError>], PGError>, on pipeline: PGPipelineLoop) {
        if let next = finish(batch, outcomes) { write(next, on: pipeline) }
    }

    /// The isolated events' outcomes as they arrive; the last one hands back all of them.
    private final class SingleOutcomes: Sendable {
        private let state: Mutex<(left: Int, results: [MetaEvent.Key: Result<Bool, PGError>])>
        init(expected: Int) { state = Mutex((expected, [:])) }

        func record(_ key: MetaEvent.Key, _ result: Result<Bool, PGError>) -> [MetaEvent.Key: Result<Bool, PGError>]? {
            state.withLock { s in
                s.results[key] = result
                s.left -= 1
                return s.left == 0 ? s.results : nil
            }
        }
    }

    /// The earliest request per key is the candidate; later ones are duplicates (first wins).
    /// The candidates are in key order: every writer (every server) inserts keys in the same
    /// order, so two batches sharing keys wait for each other instead of deadlocking.
    private static func candidates(_ events: [MetaEvent]) -> (firstIndex: [MetaEvent.Key: Int], candidates: [MetaEvent]) {
        var firstIndex: [MetaEvent.Key: Int] = [:]
        var candidates: [MetaEvent] = []
        for (i, e) in events.enumerated() where firstIndex[e.key] == nil {
            firstIndex[e.key] = i
            candidates.append(e)
        }
        if candidates.count > 1 { candidates.sort { $0.key.precedes($1.key) } }
        return (firstIndex, candidates)
    }

    /// One outcome per request when the batch INSERT ran: new when its candidate was inserted.
    private static func outcomes(_ events: [MetaEvent], _ firstIndex: [MetaEvent.Key: Int], inserted: Set<MetaEvent.Key>) -> [Result<Bool, PGError>] {
        events.enumerated().map { i, e in .success(firstIndex[e.key] == i && inserted.contains(e.key)) }
    }

    /// One outcome per request when every candidate was inserted: new unless a later duplicate.
    private static func allCandidatesNew(_ events: [MetaEvent], _ firstIndex: [MetaEvent.Key: Int], candidates: Int) -> [Result<Bool, PGError>] {
        if candidates == events.count { return Array(repeating: .success(true), count: events.count) }
        return events.enumerated().map { i, e in .success(firstIndex[e.key] == i) }
    }

    /// One outcome per request when the candidates ran one by one: a later duplicate shares its
    /// candidate's failure, else it is a duplicate.
    private static func outcomes(_ events: [MetaEvent], _ firstIndex: [MetaEvent.Key: Int],
                                 single: [MetaEvent.Key: Result<Bool, PGError>]) -> [Result<Bool, PGError>] {
        events.enumerated().map { i, e in
            let own = single[e.key] ?? .success(false)
            return firstIndex[e.key] == i ? own : own.map { _ in false }
        }
    }

    /// Errors that say "this statement was refused", not "the database is unavailable".
    private static func isStatementRefusal(_ error: PGError) -> Bool {
        error.code == .invalidArgument || error.code == .queryFailed || error.code == .constraintViolation
    }

    private static func pgError(_ error: any Error) -> PGError {
        if let e = error as? PGError { return e }
        if error is CancellationError { return PGError(.unavailable, "cancelled before the outbox was reached") }
        return PGError(.queryFailed, "outbox write failed: \(type(of: error))")
    }
}

extension MetaEvent {
    /// The outbox's unique key, compared as PostgreSQL compares it: byte for byte (Swift's
    /// `String` equality would take two canonically equivalent ids for one, and the second
    /// event would be answered "duplicate" without being stored).
    struct Key: Hashable, Sendable {
        let pixelID: String
        let eventName: String
        let eventID: String

        static func == (a: Key, b: Key) -> Bool {
            a.eventID.utf8.elementsEqual(b.eventID.utf8) && a.eventName.utf8.elementsEqual(b.eventName.utf8)
                && a.pixelID.utf8.elementsEqual(b.pixelID.utf8)
        }

        func hash(into hasher: inout Hasher) {
            func combine(_ part: String) {
                var part = part
                part.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
                hasher.combine(0xFF as UInt8)  // no UTF-8 byte: parts cannot run into each other
            }
            combine(eventID)
            combine(eventName)
            combine(pixelID)
        }

        /// Byte order, event id first (the insert order of a batch).
        func precedes(_ other: Key) -> Bool {
            if !eventID.utf8.elementsEqual(other.eventID.utf8) { return eventID.utf8.lexicographicallyPrecedes(other.eventID.utf8) }
            if !eventName.utf8.elementsEqual(other.eventName.utf8) { return eventName.utf8.lexicographicallyPrecedes(other.eventName.utf8) }
            return pixelID.utf8.lexicographicallyPrecedes(other.pixelID.utf8)
        }
    }

    var key: Key { Key(pixelID: pixelID, eventName: eventName, eventID: eventID) }
}
