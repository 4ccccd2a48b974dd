import Glibc
import Postgres
import RPC
import Synchronization

/// Delivers the `meta_events` outbox to the Conversions API in the background.
///
/// Each pass claims due events (`FOR UPDATE SKIP LOCKED`) by moving them to `sending` and
/// committing, posts them per (pixel, test_event_code) in batches of up to `batchSize`, and
/// records each outcome: another instance never takes a row while it is being sent, and a crash
/// between Meta's answer and our record of it leaves the row `sending`, which the next pass past
/// the lease resolves without a blind resend of a Purchase (see `MetaPass`). The POST runs on
/// the database connection's thread, off Swift's cooperative pool. Rules (DESIGN §3): retry timeouts, 5xx, 429 and transient codes
/// with jittered backoff; split a batch Meta rejects with code 100 and park the bad event;
/// park token and permission errors with the reason; drop events older than 7 days.
public final class MetaSender: Sendable {
    /// What one pass did.
    public struct PassResult: Sendable, Equatable {
        public var claimed = 0, sent = 0, retried = 0, parked = 0, dropped = 0, requests = 0
        public init() {}
    }

    private struct State {
        var task: Task<Void, Never>?
        var stopping = false
        var drainUntil: ContinuousClock.Instant?
        var lastErrorLog: ContinuousClock.Instant?
    }

    public let configuration: MetaSenderConfiguration
    private let pool: PGPool
    private let transport: any MetaTransport
    private let tokens: any MetaAccessTokenSource
    private let metrics: Metrics
    private let logger: Logger
    private let wake = MetaWakeSignal()
    private let state = Mutex(State())
    /// (queued, parked), as last counted; read by the /metrics gauge without touching the database.
    private let depths = DepthBox()

    public init(pool: PGPool, configuration: MetaSenderConfiguration = MetaSenderConfiguration(),
                transport: any MetaTransport = CurlMetaTransport(), tokens: any MetaAccessTokenSource,
                metrics: Metrics = Metrics(), logger: Logger = Logger()) {
        var configuration = configuration
        configuration.batchSize = min(max(configuration.batchSize, 1), 1000)
        self.configuration = configuration
        self.pool = pool
        self.transport = transport
        self.tokens = tokens
        self.metrics = metrics
        self.logger = logger
        let depths = self.depths
        metrics.gauge("pixtrack_meta_queue_depth", help: "Conversions API events by outbox status (refreshed every few seconds).") {
            let (queued, parked) = depths.value.withLock { $0 }
            return [([("status", "queued")], Double(queued)), ([("status", "parked")], Double(parked))]
        }
    }

    /// Starts the background loop (idempotent).
    public func start() {
        state.withLock { s in
            guard s.task == nil, !s.stopping else { return }
            s.task = Task { [self] in await loop() }
        }
    }

    /// Asks the loop to look for work now (after queueing an event).
    public func wakeUp() { wake.signal() }

    /// Stops the loop: it keeps sending what is due until nothing is left or `grace` has
    /// passed, then returns. Events not sent stay queued for the next start (durable).
    public func shutdown(grace: Duration) async {
        let task = state.withLock { s -> Task<Void, Never>? in
            s.stopping = true
            s.drainUntil = .now + grace
            return s.task
        }
        wake.signal()
        await task?.value
    }

    private func loop() async {
        await refreshDepth()
        var lastRefresh = ContinuousClock.now
        while true {
            let (stopping, drainUntil) = state.withLock { ($0.stopping, $0.drainUntil) }
            if stopping, let drainUntil, ContinuousClock.now >= drainUntil { break }
            let result = await passLogged()
            if ContinuousClock.now - lastRefresh >= configuration.depthRefresh || result.claimed > 0 && stopping {
                await refreshDepth()
                lastRefresh = .now
            }
            if stopping && result.claimed == 0 { break }
            if result.claimed >= configuration.batchSize { continue }
            if !stopping { await wake.wait(timeout: configuration.pollInterval) }
        }
        await refreshDepth()
    }

    private func passLogged() async -> PassResult {
        do {
            return try await runPass()
        } catch {
            let now = ContinuousClock.now
            let shouldLog = state.withLock { s -> Bool in
                if let last = s.lastErrorLog, now - last < .seconds(10) { return false }
                s.lastErrorLog = now
                return true
            }
            if shouldLog { logger.warning("meta_sender_pass_failed", ("error", String(describing: error))) }
            return PassResult()
        }
    }

    /// One claim–send–record pass (public for tests and tools).
    @discardableResult
    public func runPass() async throws -> PassResult {
        let (configuration, transport, tokens, logger) = (self.configuration, self.transport, self.tokens, self.logger)
        let result = try await pool.withConnection { connection in
            var pass = MetaPass(configuration: configuration, transport: transport, connection: connection, logger: logger)
            return try pass.run(tokens: tokens)
        }
        record(result)
        return result.summary
    }

    private func record(_ r: MetaPass.Outcome) {
        for (name, n) in r.sentByName {
            metrics.increment("pixtrack_meta_events_sent_total", help: "Conversions API events Meta accepted.", labels: [("event_name", name)], by: Double(n))
        }
        for (name, n) in r.failedByName {
            metrics.increment("pixtrack_meta_events_failed_total", help: "Conversions API event deliveries that failed and will be retried.", labels: [("event_name", name)], by: Double(n))
        }
        for (name, n) in r.parkedByName {
            metrics.increment("pixtrack_meta_events_parked_total", help: "Conversions API events parked after a non-retryable error.", labels: [("event_name", name)], by: Double(n))
        }
        for (name, n) in r.droppedByName {
            metrics.increment("pixtrack_meta_events_dropped_total", help: "Conversions API events dropped unsent for being older than 7 days.", labels: [("event_name", name)], by: Double(n))
        }
        for (kind, n) in r.requestsByResult {
            metrics.increment("pixtrack_meta_requests_total", help: "Requests to the Conversions API by result.", labels: [("result", kind)], by: Double(n))
        }
    }

    private func refreshDepth() async {
        guard let counts = try? await MetaOutbox.counts(pool: pool) else { return }
        depths.value.withLock { $0 = (counts["queued"] ?? 0, counts["parked"] ?? 0) }
    }

    /// The last refreshed number of queued events.
    public var queueDepth: Int { depths.value.withLock { $0.0 } }
}

private final class DepthBox: Sendable {
    let value = Mutex<(Int, Int)>((0, 0))
}
