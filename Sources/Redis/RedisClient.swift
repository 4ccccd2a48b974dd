import Glibc
import RPC
import Synchronization
import SystemCalls

/// A Redis client with an async API, non-blocking underneath.
///
/// One I/O thread per client runs an epoll loop that owns its connections (at most `poolSize`)
/// and the hiredis protocol reader of each (`RedisEventLoop`). A call hands its command to that
/// thread through a mutex-protected inbox and an eventfd, and the thread resumes the caller
/// when the reply arrives: commands that queue while the thread is busy go out in one write and
/// share the round trip (automatic pipelining), so a few connections serve many concurrent
/// callers. Each connection's bookkeeping is a value state machine
/// (`RedisConnectionStateMachine`).
///
/// Calls never hang: connecting is bounded by `connectTimeout`, a connection with commands
/// outstanding must answer within `commandTimeout` of its last reply (else it closes and they
/// fail with `.timeout`), and waiting for room on a connection by `acquireTimeout`. A broken
/// connection fails its outstanding commands with `.unavailable` and the next call opens a new
/// one; after a failed connect, calls that need a new connection fail at once for
/// `reconnectBackoff`. A cancelled caller returns at once with `CancellationError` (a command
/// already written still gets its reply read, and dropped).
///
/// A client may have several I/O loops (`loops:`), each with its share of the connections, and
/// hand them to hosts that drive them on their own threads (`pollersForHosting()`, e.g. the HTTP
/// event loops): a call made on a thread that drives one of the loops goes to that loop, with no
/// thread hop either way; other calls take the loops in turn.
///
/// Blocking commands (`BLPOP`, `BRPOP`, `BLMOVE`, `WAIT`, `XREAD … BLOCK`…) get a connection to
/// themselves while they block; `SUBSCRIBE`, `MONITOR` and the like would break the
/// one-reply-per-command rule and are refused.
public final class RedisClient: Sendable {
    private let loops: [RedisEventLoop]
    private let turn = Atomic<Int>(0)

    /// Creates the client; an I/O thread starts and connections open on first use.
    /// - Parameter loops: how many I/O loops share `poolSize` (each gets at least one connection).
    public init(_ configuration: RedisConfiguration, logger: Logger = Logger(), loops: Int = 1) {
        var configuration = configuration
        let count = max(1, loops)
        configuration.poolSize = (max(1, configuration.poolSize) + count - 1) / count
        configuration.maxCommandsPerConnection = max(1, configuration.maxCommandsPerConnection)
        let shared = configuration
        self.loops = (0..<count).map { _ in RedisEventLoop(configuration: shared, logger: logger) }
    }

    deinit { for loop in loops { loop.requestClose() } }

    /// The I/O loops that have not started yet, to be driven by hosts on their threads (see
    /// `HostedPoller`) instead of threads of their own. Call once, before the first command;
    /// a loop already running keeps its thread.
    public func pollersForHosting() -> [any HostedPoller] {
        loops.compactMap { $0.hostedPoller() }
    }

    /// The caller's own loop when its thread drives one, else the next in turn.
    private var loop: RedisEventLoop {
        if loops.count == 1 { return loops[0] }
        for loop in loops where loop.runsOnCurrentThread { return loop }
        return loops[turn.add(1, ordering: .relaxed).newValue % loops.count]
    }

    /// Parses `url` (`redis://host:port/db`) and creates the client with the other settings default.
    public convenience init(url: String, logger: Logger = Logger()) throws {
        self.init(try RedisConfiguration(url: url), logger: logger)
    }

    /// Runs one command (binary-safe arguments).
    /// - Throws: `RedisError.server` for an error reply; `.unavailable`, `.timeout`, `.protocol`,
    ///   `.invalidArgument`; `CancellationError`.
    @discardableResult
    public func command(_ args: [[UInt8]]) async throws -> RedisReply {
        guard !args.isEmpty else { throw RedisError.invalidArgument("empty command") }
        let kind = RedisCommandKind(args)
        if kind == .refused { throw RedisError.invalidArgument("subscriber and replication commands are not supported") }
        let replies = try await loop.run([args], exclusive: kind == .blocking)
        guard let reply = replies.first else { throw RedisError.protocol("no reply from Redis") }
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
        let replies = try await loop.run(commands, exclusive: try Self.needsOwnConnection(commands).get())
        guard replies.count == commands.count else { throw RedisError.protocol("Redis answered a pipeline short") }
        return replies
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
        try await set(entries.map { (key: Array($0.key.utf8), value: $0.value) }, ttlSeconds: ttlSeconds)
    }

    /// `set` with binary-safe keys (a hot path builds its key bytes once, with no `String`).
    public func set(_ entries: [(key: [UInt8], value: [UInt8])], ttlSeconds: Int? = nil) async throws {
        try await startSet(entries, ttlSeconds: ttlSeconds).done()
    }

    /// `set`, sent at once and awaited later (`RedisPendingSet.done()`): the caller goes on with
    /// other work while Redis answers, without a child task.
    public func startSet(_ entries: [(key: [UInt8], value: [UInt8])], ttlSeconds: Int? = nil) -> RedisPendingSet {
        startSet(ttlSeconds: ttlSeconds) { batch in
            for entry in entries { batch.set(key: entry.key, value: entry.value) }
        }
    }

    /// SETs written by `write` straight into the protocol's bytes (`RedisSetBatch`), sent at once
    /// in one pipeline and awaited later: a click builds no key, argument or command array.
    public func startSet(ttlSeconds: Int? = nil, _ write: (inout RedisSetBatch) -> Void) -> RedisPendingSet {
        if let ttl = ttlSeconds, ttl < 1 { return RedisPendingSet(RedisPendingReplies(failed: RedisError.invalidArgument("TTL must be at least 1 second"))) }
        var batch = RedisSetBatch(ttlSeconds: ttlSeconds)
        write(&batch)
        guard batch.count > 0 else { return RedisPendingSet(nil) }
        return RedisPendingSet(loop.start(.encoded(batch.encoded, count: batch.count), exclusive: false), expected: batch.count)
    }

    /// `pipeline`, sent at once; its replies are awaited later with `value()` (once).
    public func startPipeline(_ commands: [[[UInt8]]]) -> RedisPendingReplies {
        guard !commands.isEmpty else { return RedisPendingReplies(failed: RedisError.invalidArgument("empty pipeline")) }
        switch Self.needsOwnConnection(commands) {
        case .success(let exclusive): return loop.start(.args(commands), exclusive: exclusive)
        case .failure(let error): return RedisPendingReplies(failed: error)
        }
    }

    /// Whether a pipeline must have a connection to itself (it holds a blocking command), or
    /// why it is refused (an empty command; a subscriber or replication one).
    private static func needsOwnConnection(_ commands: [[[UInt8]]]) -> Result<Bool, RedisError> {
        guard !commands.contains(where: \.isEmpty) else { return .failure(.invalidArgument("empty command in pipeline")) }
        var exclusive = false
        for args in commands {
            switch RedisCommandKind(args) {
            case .refused: return .failure(.invalidArgument("subscriber and replication commands are not supported"))
            case .blocking: exclusive = true
            case .plain: break
            }
        }
        return .success(exclusive)
    }

    /// `PING`, for health and readiness checks.
    /// - Throws: `RedisError` when Redis cannot be reached in time.
    public func ping() async throws {
        guard case .status("PONG") = try await command(["PING"]) else {
            throw RedisError.protocol("PING got an unexpected reply")
        }
    }

    /// Connections open or opening, idle ones (nothing outstanding), and calls waiting for room.
    public var statistics: (created: Int, idle: Int, waiting: Int) {
        let counts = counters
        return (counts.created, counts.idle, counts.waiting)
    }

    /// What the I/O loops counted (tests): commands written, `send` calls, the largest batch.
    var counters: RedisEventLoop.Counts {
        loops.map(\.counters).reduce(into: RedisEventLoop.Counts()) { sum, c in
            sum.created += c.created
            sum.idle += c.idle
            sum.waiting += c.waiting
            sum.commandsWritten += c.commandsWritten
            sum.writes += c.writes
            sum.largestWrite = max(sum.largestWrite, c.largestWrite)
            sum.outstanding += c.outstanding
        }
    }

    /// Each loop's counts, in loop order (tests).
    var loopCounters: [RedisEventLoop.Counts] { loops.map(\.counters) }

    /// The thread each loop runs on now (0: not running yet), in loop order (tests).
    var loopThreads: [UInt] { loops.map(\.thread) }

    /// Refuses new calls; connections close once their outstanding replies arrived (bounded by
    /// the command timeout). Returns when every I/O loop has ended.
    public func close() async {
        for loop in loops { await loop.close() }
    }
}

/// `SET key value [EX ttl]` commands written in RESP as they are added, for
/// `RedisClient.startSet(ttlSeconds:_:)`: the key may come in two pieces (a constant prefix and
/// a suffix), so no key is assembled before it is written.
public struct RedisSetBatch {
    fileprivate var encoded: [UInt8] = []
    fileprivate var count = 0
    fileprivate let ttlSeconds: Int?

    fileprivate init(ttlSeconds: Int?) {
        self.ttlSeconds = ttlSeconds
        encoded.reserveCapacity(1024)
    }

    public mutating func set(key: [UInt8], value: [UInt8]) {
        head()
        RESP.appendBulk(key, to: &encoded)
        RESP.appendBulk(value, to: &encoded)
        tail()
    }

    /// `SET {prefix}{suffix} value`.
    public mutating func set(key prefix: StaticString, _ suffix: String, value: [UInt8]) {
        head()
        RESP.appendBulk(prefix, suffix, to: &encoded)
        RESP.appendBulk(value, to: &encoded)
        tail()
    }

    /// `SET {prefix}{suffix} value` with a text value (its UTF-8).
    public mutating func set(key prefix: StaticString, _ suffix: String, value: String) {
        head()
        RESP.appendBulk(prefix, suffix, to: &encoded)
        RESP.appendBulk("", value, to: &encoded)
        tail()
    }

    private mutating func head() {
        RESP.appendArrayHeader(ttlSeconds == nil ? 3 : 5, to: &encoded)
        RESP.appendBulk("SET", "", to: &encoded)
    }

    private mutating func tail() {
        if let ttl = ttlSeconds {
            RESP.appendBulk("EX", "", to: &encoded)
            RESP.appendBulkDecimal(ttl, to: &encoded)
        }
        count += 1
    }
}

/// The SETs of `RedisClient.startSet`, already sent: `done()` waits for their replies and
/// checks them as `set` does.
public struct RedisPendingSet: Sendable {
    private let replies: RedisPendingReplies?
    private let expected: Int

    init(_ replies: RedisPendingReplies?, expected: Int = 0) {
        self.replies = replies
        self.expected = expected
    }

    /// - Throws: `RedisError.server` when any SET was refused (the others may have been
    ///   applied); what `pipeline` throws; `CancellationError`. Await it once.
    public func done() async throws {
        guard let replies else { return }
        let answers = try await replies.value()
        guard answers.count == expected else { throw RedisError.protocol("Redis answered a pipeline short") }
        for reply in answers {
            if let message = reply.errorMessage { throw RedisError.server(reply: message) }
            guard case .status = reply else { throw RedisError.protocol("SET got an unexpected reply") }
        }
    }
}

/// How the client treats a command, by its name (checked without allocating for short names).
enum RedisCommandKind: Equatable {
    case plain
    /// Blocks server-side until data or its timeout: needs a connection to itself.
    case blocking
    /// Changes the connection's protocol (pub/sub, MONITOR, replication): not supported.
    case refused

    init(_ args: [[UInt8]]) {
        // Every name below starts with one of these letters: most commands stop here.
        guard let name = args.first, name.count >= 4, name.count <= 12,
              "BWXSPMbwxspm".utf8.contains(name[0]) else {
            self = .plain
            return
        }
        let upper = String(decoding: name.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)
        switch upper {
        case "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF":
            self = .blocking
        case "XREAD", "XREADGROUP":
            let block = Array("BLOCK".utf8)
            self = args.dropFirst().contains { $0.count == 5 && $0.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 } == block }
                ? .blocking : .plain
        case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SYNC", "PSYNC":
            self = .refused
        default:
            self = .plain
        }
    }
}
