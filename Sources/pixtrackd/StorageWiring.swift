import HTTP2
import Postgres
import Redis
import RPC
import Synchronization
import SystemCalls
import Tracking
import WebRoutes

/// PostgreSQL and Redis for the process: settings from the environment, the pool and client,
/// migrations at startup, and a monitor whose last answers feed health and `/readyz`.
struct StorageOptions {
    var databaseURL: String
    var redisURL: String
    var pgPoolSize = 10
    var redisPoolSize = 8
    /// rediss://: the CA file to verify Redis against (nil: the system's store).
    var redisCAFile: String?
    /// How long startup waits for PostgreSQL to answer before giving up.
    var pgStartupWait: Duration = .seconds(30)
    /// How often the monitor pings PostgreSQL and Redis.
    var checkInterval: Duration = .seconds(1)

    static let environmentHelp = """
      DATABASE_URL              PostgreSQL, postgresql://user[:password]@host:port/db (required); libpq takes
                                its TLS settings as written: ?sslmode=verify-full&sslrootcert=/path/ca.pem
      REDIS_URL                 Redis, redis://[:password@]host:port/db (required); rediss:// for TLS
      PIXTRACK_REDIS_CA_FILE    rediss://: PEM CA file Redis's certificate must chain to (default: system CAs)
      PIXTRACK_PG_POOL_SIZE     PostgreSQL connections (default 10); PIXTRACK_REDIS_POOL_SIZE (default 8)
      PIXTRACK_PG_STARTUP_WAIT_SECONDS  how long startup waits for PostgreSQL (default 30)
    """

    static func from(_ env: [String: String]) throws(ServerOptions.UsageError) -> StorageOptions {
        guard let db = env["DATABASE_URL"], !db.isEmpty else {
            throw .init(message: "DATABASE_URL is not set: give the PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:5432/pixtrack (`make run` starts one)")
        }
        guard let redis = env["REDIS_URL"], !redis.isEmpty else {
            throw .init(message: "REDIS_URL is not set: give the Redis URL, e.g. redis://127.0.0.1:6379/0 (`make run` starts one)")
        }
        var o = StorageOptions(databaseURL: db, redisURL: redis)
        o.pgPoolSize = try EnvNumber.int(env, "PIXTRACK_PG_POOL_SIZE", o.pgPoolSize, 1...500)
        o.redisPoolSize = try EnvNumber.int(env, "PIXTRACK_REDIS_POOL_SIZE", o.redisPoolSize, 1...500)
        if let ca = env["PIXTRACK_REDIS_CA_FILE"], !ca.isEmpty { o.redisCAFile = ca }
        o.pgStartupWait = .seconds(try EnvNumber.int(env, "PIXTRACK_PG_STARTUP_WAIT_SECONDS", 30, 0...3600))
        o.checkInterval = .milliseconds(try EnvNumber.int(env, "PIXTRACK_HEALTH_INTERVAL_MS", 1000, 50...60_000))
        return o
    }
}

/// Integer environment settings with a clear message when malformed.
enum EnvNumber {
    static func int(_ env: [String: String], _ name: String, _ fallback: Int, _ range: ClosedRange<Int>) throws(ServerOptions.UsageError) -> Int {
        guard let v = env[name], !v.isEmpty else { return fallback }
        guard let n = Int(v), range.contains(n) else {
            throw .init(message: "\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(v)'")
        }
        return n
    }
}

final class Storage: Sendable {
    let pool: PGPool
    let redis: RedisClient
    private let options: StorageOptions
    private let logger: Logger
    private let status = Mutex<(postgres: String?, redis: String?)>((nil, nil))
    private let monitorTask = Mutex<Task<Void, Never>?>(nil)
    /// For connections of their own (the payment events listener).
    var databaseURL: String { options.databaseURL }

    /// The Redis client's loops, until an HTTP server drives them.
    private let redisPollers: [any HostedPoller]
    /// The click PageViews' outbox INSERTs: one non-blocking pipelined connection, driven by the
    /// first HTTP event loop (`hostStorage(on:)`), instead of a pooled connection on a thread.
    let outbox: PGPipelineLoop
    private let outboxPoller: (any HostedPoller)?

    init(options: StorageOptions, eventLoops: Int, logger: Logger) throws {
        var pg = PGPoolConfiguration(url: options.databaseURL)
        pg.maxConnections = options.pgPoolSize
        pg.connection.connectTimeout = .seconds(2)
        pool = try PGPool(pg, logger: logger)
        var pipeline = PGPipelineLoop.Configuration(url: options.databaseURL)
        pipeline.connection = pg.connection
        outbox = try PGPipelineLoop(pipeline, logger: logger)
        outboxPoller = outbox.hostedPoller()
        var rc = try RedisConfiguration(url: options.redisURL)
        rc.poolSize = options.redisPoolSize
        rc.caFile = options.redisCAFile
        // One Redis I/O loop per HTTP event loop, driven by it (`hostRedis(on:)`): a click's
        // Redis round trip then starts and resumes on the click's own thread.
        redis = RedisClient(rc, logger: logger, loops: eventLoops)
        redisPollers = redis.pollersForHosting()
        self.options = options
        self.logger = logger
    }

    /// Applies the migrations (the tracking half's plus `extra`, e.g. the payments ones, in one
    /// run and one bookkeeping table, so none warns about the other's versions), waiting up to
    /// `pgStartupWait` for PostgreSQL to answer.
    func migrate(extra: [PGMigration] = []) async throws -> [Int] {
        let deadline = ContinuousClock.now + options.pgStartupWait
        let migrator = PGMigrator(pool: pool, migrations: TrackingMigrations.all + extra, logger: logger)
        while true {
            do {
                return try await migrator.migrate()
            } catch let e as PGError where e.code == .unavailable && ContinuousClock.now < deadline {
                logger.warning("postgres_waiting", ("error", e.description))
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Pings both stores every `checkInterval` until `stop()`.
    func startMonitor() {
        let task = Task { [self] in
            while !Task.isCancelled {
                await check()
                try? await Task.sleep(for: options.checkInterval)
            }
        }
        monitorTask.withLock { $0 = task }
    }

    private func check() async {
        var pgReason: String?
        do { try await pool.ping() } catch let e as PGError where e.code == .poolTimeout {
            pgReason = status.withLock { $0.postgres }  // busy, not down: keep the last answer
        } catch {
            pgReason = "unreachable (\(error))"
        }
        var redisReason: String?
        do { try await redis.ping() } catch { redisReason = "unreachable (\(error))" }
        let previous = status.withLock { s -> (String?, String?) in
            defer { s = (pgReason, redisReason) }
            return (s.postgres, s.redis)
        }
        if (previous.0 == nil) != (pgReason == nil) {
            logger.log(pgReason == nil ? .info : .error, "postgres_status", [("up", String(pgReason == nil))])
        }
        if (previous.1 == nil) != (redisReason == nil) {
            logger.log(redisReason == nil ? .info : .warning, "redis_status", [("up", String(redisReason == nil))])
        }
    }

    /// Health: SERVING only while PostgreSQL answers (Redis is an accelerator).
    var isServing: @Sendable () -> Bool {
        { [self] in status.withLock { $0.postgres == nil } }
    }

    var readiness: [StandardRoutes.ReadinessCheck] {
        [(name: "postgres", check: { [self] in status.withLock { $0.postgres } }),
         (name: "redis", check: { [self] in status.withLock { $0.redis } })]
    }

    /// Has `server`'s event loops drive the Redis loops, one each, and the outbox connection, on
    /// the first (before `start()`; until then, calls wait).
    func hostStorage(on server: HTTP2Server) {
        server.host(redisPollers)
        if let outboxPoller { server.host(outboxPoller, on: 0) }
    }

    func close() async {
        monitorTask.withLock { $0?.cancel() }
        await outbox.close()
        await pool.close()
        await redis.close()
    }
}
