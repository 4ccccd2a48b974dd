import Leasing
import RPC

/// How to reach PostgreSQL and how many connections to keep.
public struct PGPoolConfiguration: Sendable, CustomStringConvertible {
    /// `postgresql://user[:password]@host:port/db[?…]`. Never logged.
    public var url: String
    /// The most connections open at once (also the most blocking threads in use).
    public var maxConnections: Int = 10
    /// How long a caller waits for a free connection before `PGError` `.poolTimeout`.
    public var acquireTimeout: Duration = .seconds(5)
    /// Settings for each connection (timeouts, `application_name`).
    public var connection = PGConnectionOptions()

    public init(url: String) { self.url = url }

    /// Everything but the URL, which may hold a password.
    public var description: String {
        "PGPoolConfiguration(maxConnections: \(maxConnections), acquireTimeout: \(acquireTimeout), "
            + "statementTimeout: \(connection.statementTimeout), connectTimeout: \(connection.connectTimeout))"
    }
}

/// Transaction isolation levels for `PGPool.transaction`.
public enum PGIsolation: String, Sendable {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

/// A fixed-size PostgreSQL connection pool with an async API.
///
/// Every libpq call runs on the pooled connection's own serial DispatchQueue, never on Swift's
/// cooperative pool; callers await the result. A connection that broke (server restart, network)
/// is dropped and the next use connects afresh; an idle connection is checked (without blocking)
/// before reuse, so the first query after a server restart already works.
public final class PGPool: Sendable {
    private let configuration: PGPoolConfiguration
    private let slots: LeasePool<PGConnection>
    private let logger: Logger

    /// Creates the pool; connections open lazily on first use.
    /// - Throws: `PGError` `.invalidArgument` when libpq cannot parse the URL.
    public init(_ configuration: PGPoolConfiguration, logger: Logger = Logger()) throws {
        if LibPQ.conninfoError(configuration.url) != nil {
            // libpq's text can quote the URL: keep it out of the error.
            throw PGError(.invalidArgument, "DATABASE_URL is not a valid PostgreSQL URL")
        }
        self.configuration = configuration
        self.slots = LeasePool(
            capacity: configuration.maxConnections, acquireTimeout: configuration.acquireTimeout, label: "pixtrack.postgres",
            errors: .init(closed: { PGError(.poolClosed, "the pool is closed") },
                          timeout: { waited, capacity in
                              PGError(.poolTimeout, "no PostgreSQL connection free within \(waited) (pool of \(capacity))")
                          }))
        self.logger = logger
    }

    /// Runs `body` with a pooled connection on that connection's own thread.
    ///
    /// Waiting for a free connection honours task cancellation and the acquire timeout; once
    /// `body` runs it completes (bounded by `statement_timeout`). A transaction left open by
    /// `body` is rolled back before the connection goes back to the pool.
    /// - Throws: what `body` throws, `PGError` (`.unavailable`, `.poolTimeout`, …) or `CancellationError`.
    @discardableResult
    public func withConnection<T: Sendable>(_ body: @Sendable (PGConnection) throws -> T) async throws -> T {
        let slot = try await slots.acquire()
        defer {
            if !slots.release(slot) { slot.queue.async { slot.connection?.close(); slot.connection = nil } }
        }
        let configuration = self.configuration
        let logger = self.logger
        return try await withoutActuallyEscaping(body) { body in
            try await slot.run {
                let connection = try Self.liveConnection(slot, configuration, logger)
                do {
                    let result = try body(connection)
                    Self.tidy(slot, connection, logger)
                    return result
                } catch {
                    Self.tidy(slot, connection, logger)
                    throw error
                }
            }
        }
    }

    /// Runs `body` inside `BEGIN … COMMIT`; any error thrown by `body` rolls back and is rethrown.
    ///
    /// Pipelined: BEGIN goes out with the body's first statement, and statements the body queues
    /// with `PGConnection.enqueue` go out with its next one or with the COMMIT, so a transaction
    /// of a read, a write and three bookkeeping inserts costs two round trips, not six.
    /// - Throws: `PGError` `.serializationFailure` when COMMIT fails that way (retry the whole
    ///   transaction); `.queryFailed` when the transaction had already failed and COMMIT rolled
    ///   back; the error of a queued statement that failed.
    @discardableResult
    public func transaction<T: Sendable>(isolation: PGIsolation = .readCommitted,
                                         _ body: @Sendable (PGConnection) throws -> T) async throws -> T {
        try await withConnection { connection in
            connection.pipelining = true
            defer {
                connection.pipelining = false
                connection.discardQueued()
            }
            /// Ends a transaction that will not commit; nothing to do when BEGIN was never sent.
            func abandon() {
                connection.discardQueued()
                if connection.isUsable && !connection.isIdle { _ = try? connection.execute("ROLLBACK") }
            }
            try connection.enqueue("BEGIN ISOLATION LEVEL \(isolation.rawValue)")
            let result: T
            let tag: String
            do {
                result = try body(connection)
                tag = try connection.query("COMMIT").commandTag
            } catch {
                abandon()
                throw error
            }
            if tag == "ROLLBACK" {
                throw PGError(.queryFailed, "transaction had failed; COMMIT rolled it back")
            }
            return result
        }
    }

    /// Runs `SELECT 1`: for health and readiness checks.
    /// - Throws: `PGError` (`.unavailable`, `.poolTimeout`, `.timeout`).
    public func ping() async throws {
        try await withConnection { _ = try $0.query("SELECT 1") }
    }

    /// Pool positions created so far (each holds at most one connection), idle ones, and
    /// callers waiting for one.
    public var statistics: (created: Int, idle: Int, waiting: Int) { slots.counts }

    /// Refuses new work, fails waiters with `.poolClosed` and closes idle connections; busy ones
    /// close when their current body ends.
    public func close() async {
        for slot in slots.close() {
            _ = try? await slot.run { slot.connection?.close(); slot.connection = nil }
        }
    }

    // MARK: - On the slot's queue

    /// The slot's connection, made fit for reuse, or a new one.
    private static func liveConnection(_ slot: LeaseSlot<PGConnection>, _ configuration: PGPoolConfiguration, _ logger: Logger) throws -> PGConnection {
        if let existing = slot.connection {
            if existing.refreshIfIdle() { return existing }
            logger.info("pg_connection_dropped", ("reason", "broken while idle"))
            existing.close()
            slot.connection = nil
        }
        do {
            let connection = try PGConnection.connect(url: configuration.url, options: configuration.connection)
            slot.connection = connection
            logger.debug("pg_connected")
            return connection
        } catch let error as PGError {
            logger.warning("pg_connect_failed", ("error", error.description))
            throw error
        }
    }

    /// After a body: drop a broken connection; roll back a transaction the body left open.
    private static func tidy(_ slot: LeaseSlot<PGConnection>, _ connection: PGConnection, _ logger: Logger) {
        if connection.isUsable && !connection.isIdle {
            logger.warning("pg_transaction_left_open", ("action", "rollback"))
            if (try? connection.execute("ROLLBACK")) == nil || !connection.isIdle { connection.close() }
        }
        if !connection.isUsable {
            connection.close()
            slot.connection = nil
        }
    }
}
