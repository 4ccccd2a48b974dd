import Leasing
import RPC
import Synchronization

/// A pool of Redis connections with an async API.
///
/// Every hiredis call runs on the pooled connection's own serial DispatchQueue, never on Swift's
/// cooperative pool. Calls never hang: connecting is bounded by `connectTimeout`, each socket
/// read/write by `commandTimeout`, waiting for a connection by `acquireTimeout`. A broken
/// connection is dropped and the next call reconnects by itself; after a failed connect, calls
/// fail at once for `reconnectBackoff`.
public final class RedisClient: Sendable {
    private let configuration: RedisConfiguration
    private let slots: LeasePool<RedisConnection>
    private let logger: Logger
    /// Until when connect attempts are skipped after one failed.
    private let downUntil = Mutex<ContinuousClock.Instant?>(nil)

    /// Creates the client; connections open lazily on first use.
    public init(_ configuration: RedisConfiguration, logger: Logger = Logger()) {
        self.configuration = configuration
        self.slots = LeasePool(
            capacity: configuration.poolSize, acquireTimeout: configuration.acquireTimeout, label: "pixtrack.redis",
            errors: .init(closed: { RedisError.unavailable("the Redis client is closed") },
                          timeout: { waited, capacity in
                              RedisError.timeout("no Redis connection free within \(waited) (pool of \(capacity))")
                          }))
        self.logger = logger
    }

    /// Parses `url` (`redis://host:port/db`) and creates the client with the other settings default.
    public convenience init(url: String, logger: Logger = Logger()) throws {
        self.init(try RedisConfiguration(url: url), logger: logger)
    }

    /// Runs one command (binary-safe arguments).
    /// - Throws: `RedisError.server` for an error reply; `.unavailable`, `.timeout`, `.protocol`.
    @discardableResult
    public func command(_ args: [[UInt8]]) async throws -> RedisReply {
        let reply = try await withConnection { try $0.command(args) }
        if let message = reply.errorMessage { throw RedisError.server(reply: message) }
        return reply
    }

    /// Runs one command with text arguments (UTF-8).
    @discardableResult
    public func command(_ args: [String]) async throws -> RedisReply {
        try await command(args.map { Array($0.utf8) })
    }

    /// Sends several commands in one round trip and returns their replies in order. Error
    /// replies stay in place as `.error`; only connection-level failures throw.
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        return try await withConnection { try $0.pipeline(commands) }
    }

    /// `pipeline` with text arguments (UTF-8).
    public func pipeline(_ commands: [[String]]) async throws -> [RedisReply] {
        try await pipeline(commands.map { $0.map { Array($0.utf8) } })
    }

    /// `GET key`: the value's bytes, nil when the key does not exist.
    public func get(_ key: String) async throws -> [UInt8]? {
        switch try await command(["GET", key]) {
        case .bulk(let bytes): return bytes
        case .null: return nil
        default: throw RedisError.protocol("GET got an unexpected reply")
        }
    }

    /// `GET key` as UTF-8 text.
    public func getString(_ key: String) async throws -> String? {
        try await get(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `SET key value [EX ttlSeconds]`.
    /// - Throws: `RedisError.invalidArgument` for a TTL below 1 second.
    public func set(_ key: String, _ value: [UInt8], ttlSeconds: Int? = nil) async throws {
        try await set([(key, value)], ttlSeconds: ttlSeconds)
    }

    /// `SET key value [EX ttlSeconds]` with a UTF-8 text value.
    public func set(_ key: String, _ value: String, ttlSeconds: Int? = nil) async throws {
        try await set(key, Array(value.utf8), ttlSeconds: ttlSeconds)
    }

    /// Sets several keys, all with the same TTL, in one pipelined round trip.
    /// - Throws: `RedisError.server` when any SET was refused (the others may have been applied).
    public func set(_ entries: [(key: String, value: [UInt8])], ttlSeconds: Int? = nil) async throws {
        if let ttl = ttlSeconds, ttl < 1 { throw RedisError.invalidArgument("TTL must be at least 1 second") }
        let commands: [[[UInt8]]] = entries.map { entry in
            var args: [[UInt8]] = [Array("SET".utf8), Array(entry.key.utf8), entry.value]
            if let ttl = ttlSeconds { args += [Array("EX".utf8), Array(String(ttl).utf8)] }
            return args
        }
        for reply in try await pipeline(commands) {
            if let message = reply.errorMessage { throw RedisError.server(reply: message) }
            guard case .status = reply else { throw RedisError.protocol("SET got an unexpected reply") }
        }
    }

    /// `PING`, for health and readiness checks.
    /// - Throws: `RedisError` when Redis cannot be reached in time.
    public func ping() async throws {
        guard case .status("PONG") = try await command(["PING"]) else {
            throw RedisError.protocol("PING got an unexpected reply")
        }
    }

    /// Pool positions created so far, idle ones, and callers waiting for one.
    public var statistics: (created: Int, idle: Int, waiting: Int) { slots.counts }

    /// Refuses new calls and closes idle connections; busy ones close when their call ends.
    public func close() async {
        for slot in slots.close() {
            _ = try? await slot.run { slot.connection?.close(); slot.connection = nil }
        }
    }

    // MARK: - Leases

    /// Runs `body` with a pooled connection on that connection's own thread.
    private func withConnection<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws -> T) async throws -> T {
        let slot = try await slots.acquire()
        defer {
            if !slots.release(slot) { slot.queue.async { slot.connection?.close(); slot.connection = nil } }
        }
        return try await slot.run { [self] in
            let connection = try liveConnection(slot)
            do {
                return try body(connection)
            } catch let error as RedisError {
                if error.breaksConnection || !connection.isUsable {
                    connection.close()
                    slot.connection = nil
                    logger.info("redis_connection_dropped", ("error", error.description))
                }
                throw error
            }
        }
    }

    /// The slot's connection if still fit for use, else a new one (on the slot's queue).
    private func liveConnection(_ slot: LeaseSlot<RedisConnection>) throws -> RedisConnection {
        if let existing = slot.connection {
            if existing.refreshIfIdle() { return existing }
            slot.connection = nil
            logger.info("redis_connection_dropped", ("reason", "closed while idle"))
        }
        if let until = downUntil.withLock({ $0 }), ContinuousClock.now < until {
            throw RedisError.unavailable("Redis is down (a recent connect failed); not retrying yet")
        }
        do {
            let connection = try RedisConnection.connect(configuration)
            slot.connection = connection
            downUntil.withLock { $0 = nil }
            return connection
        } catch let error as RedisError {
            if case .unavailable = error, configuration.reconnectBackoff > .zero {
                downUntil.withLock { $0 = .now + configuration.reconnectBackoff }
            }
            logger.warning("redis_connect_failed", ("error", error.description))
            throw error
        }
    }
}
