import Glibc

/// Options applied to every connection a pool opens.
public struct PGConnectionOptions: Sendable {
    /// libpq's `connect_timeout` (whole seconds, rounded up; libpq treats anything below 2 s as 2 s).
    public var connectTimeout: Duration = .seconds(5)
    /// The session's `statement_timeout`; `.zero` disables it, and the client deadline with it.
    public var statementTimeout: Duration = .seconds(10)
    /// The client-side deadline is `statementTimeout + clientTimeoutMargin`: it catches a server
    /// or network that stops answering altogether (the connection is then dropped).
    public var clientTimeoutMargin: Duration = .seconds(2)
    /// `application_name`, visible in `pg_stat_activity`.
    public var applicationName: String = "pixtrackd"

    public init() {}
}

/// One PostgreSQL connection (owns a `PGconn *`). Blocking: use it from the thread that runs the
/// pool's body (`PGPool.withConnection`), never from Swift's cooperative pool, and never from two
/// threads at once. That is why it is not `Sendable`.
///
/// Only parameterized statements (extended protocol: prepared once per connection and run by
/// name, or sent unnamed with `PQsendQueryParams`; awaited with `poll` so a client-side deadline
/// applies); inside a transaction, statements queued with `enqueue` travel in one libpq pipeline
/// (see docs/postgres.md). `executeScript` is for trusted, parameterless SQL such as migrations.
public final class PGConnection {
    private var handle: OpaquePointer?
    /// The current session `statement_timeout` (`.zero`: none).
    public private(set) var statementTimeout: Duration
    private let clientTimeoutMargin: Duration

    private init(handle: OpaquePointer, options: PGConnectionOptions) {
        self.handle = handle
        self.statementTimeout = .zero
        self.clientTimeoutMargin = options.clientTimeoutMargin
    }

    /// Connects (blocking, up to the connect timeout) and applies the session settings.
    /// - Parameter url: `postgresql://user[:password]@host:port/db[?…]` or a libpq key/value string.
    /// - Throws: `PGError` `.unavailable` when the server cannot be reached or refuses us.
    public static func connect(url: String, options: PGConnectionOptions = PGConnectionOptions()) throws -> PGConnection {
        let seconds = max(2, Int((options.connectTimeout + .nanoseconds(999_999_999)).components.seconds))
        // Later keywords override what the URL (expanded from `dbname`) says.
        let pairs: [(String, String)] = [
            ("dbname", url), ("connect_timeout", String(seconds)),
            ("application_name", options.applicationName), ("client_encoding", "UTF8"),
        ]
        let handle = withCStringArray(pairs.map { $0.0 }) { keys in
            withCStringArray(pairs.map { $0.1 }) { values in LibPQ.connect(keywords: keys, values: values) }
        }
        guard let handle else { throw PGError(.unavailable, "could not allocate a PostgreSQL connection") }
        guard LibPQ.isConnectionOK(handle) else {
            let detail = LibPQ.errorMessage(handle)
            LibPQ.finish(handle)
            throw PGError(.unavailable, "could not connect to PostgreSQL", serverMessage: detail)
        }
        LibPQ.silenceNotices(handle)
        let connection = PGConnection(handle: handle, options: options)
        try connection.setStatementTimeout(options.statementTimeout)
        return connection
    }

    deinit { close() }

    /// Closes the connection (idempotent). Later calls throw `.unavailable`.
    public func close() {
        if let handle { LibPQ.finish(handle) }
        handle = nil
    }

    /// Hands the `PGconn *` over to a new owner (`PGPipelineLoop`), which then must `PQfinish`
    /// it; this object is closed from then on. Nil when already closed.
    func takeHandle() -> OpaquePointer? {
        defer { handle = nil }
        return handle
    }

    /// False once closed or broken.
    public var isUsable: Bool { handle.map(LibPQ.isConnectionOK) ?? false }

    /// True when idle outside a transaction block (what a pooled connection must be).
    public var isIdle: Bool { handle.map(LibPQ.isIdle) ?? false }

    /// Runs one parameterized statement and returns its rows (`$1`, `$2`, … in `sql`). Statements
    /// queued by `enqueue` go out first, in the same pipeline (one write, one round trip).
    /// - Throws: `PGError`; `.invalidArgument` before sending when a text parameter holds a NUL
    ///   byte; the error of a queued statement when one failed (this one then did not run).
    /// - Parameter prepare: false for a text made up per call (a multi-row INSERT sized to its
    ///   batch): run unnamed, it does not take a place in the prepared-statement cache.
    @discardableResult
    public func query(_ sql: String, _ params: [PGValue?] = [], prepare: Bool = true) throws -> PGRows {
        guard let conn = handle else { throw PGError(.unavailable, "connection is closed") }
        let statement = try Statement(sql, params, prepare: prepare)
        let name = prepared[statement.key]
        if !queued.isEmpty || (name == nil && prepare && prepared.count < Self.maxPrepared) {
            // With what is queued, or prepared first: one pipeline, one round trip either way.
            let batch = queued + [statement]
            queued = []
            return try runPipeline(conn, batch)
        }
        let sent = withCStringArray(statement.texts) { values in
            name.map { LibPQ.sendQueryPrepared(conn, $0, statement.texts.count, values) }
                ?? LibPQ.sendQueryParams(conn, sql, statement.types, values)
        }
        guard sent else { throw failure(PGError(result: nil, connection: conn)) }
        return try collectResults(conn)
    }

    /// Queues a statement whose answer the caller does not need: inside `PGPool.transaction` it
    /// goes out with the next statement that needs one (`query`, `execute`, or the COMMIT), in one
    /// pipeline, so a transaction's bookkeeping writes (history rows, event rows) cost no round
    /// trip of their own. If it fails, that next statement throws its error and does not run (the
    /// transaction fails as a whole, as it would have anyway). Outside a transaction it runs at
    /// once, like `execute`. At most `maxQueued` wait; the next one sends them.
    /// - Throws: `.invalidArgument` at once when a text parameter holds a NUL byte; when it ran at
    ///   once, what `execute` throws.
    public func enqueue(_ sql: String, _ params: [PGValue?] = []) throws {
        guard pipelining else {
            try execute(sql, params)
            return
        }
        guard handle != nil else { throw PGError(.unavailable, "connection is closed") }
        queued.append(try Statement(sql, params))
        if queued.count >= Self.maxQueued { try sendQueued() }
    }

    /// The most statements `enqueue` holds back before sending them.
    public static let maxQueued = 64

    /// Statements `enqueue` holds, not yet sent.
    public var queuedCount: Int { queued.count }

    /// Sends what `enqueue` holds and waits for it (nothing when the queue is empty).
    public func sendQueued() throws {
        guard !queued.isEmpty else { return }
        guard let conn = handle else { throw PGError(.unavailable, "connection is closed") }
        let batch = queued
        queued = []
        _ = try runPipeline(conn, batch)
    }

    /// Forgets what `enqueue` holds (never sent): for a transaction that is being abandoned.
    func discardQueued() { queued = [] }

    /// True while `PGPool.transaction` runs its body: `enqueue` may then hold statements back.
    var pipelining = false
    private var queued: [Statement] = []

    /// Named prepared statements of this session, by SQL text and parameter types: each text is
    /// parsed and analysed by the server once per connection, not at every call, and planned
    /// as the server's `plan_cache_mode` says (PostgreSQL's default, `auto`: after five runs a
    /// generic plan, kept only when it is estimated no costlier than the custom ones). Parsing
    /// and planning were most of the server's CPU per payment; see docs/postgres.md for the
    /// trade and how an operator turns generic plans off (`force_custom_plan` on the role).
    private var prepared: [Statement.Key: String] = [:]
    /// Names given so far: names only need to be unique within the session.
    private var statementsNamed = 0

    /// The most distinct statements a connection prepares; past it, statements run unnamed.
    public static let maxPrepared = 256

    /// Statements this connection has prepared so far.
    public var preparedCount: Int { prepared.count }

    /// One statement, its parameters encoded as libpq wants them (also what `PGPipelineLoop`
    /// sends).
    struct Statement {
        let sql: String
        let texts: [String?]
        let types: [UInt32]
        /// Whether it may be prepared (`query(_:_:prepare:)`).
        let prepare: Bool

        /// What a prepared statement is known by: the text and the types it was prepared with
        /// (a NULL's type is 0, left to the server: another type list is another statement).
        struct Key: Hashable {
            let sql: String
            let types: [UInt32]
        }

        var key: Key { Key(sql: sql, types: types) }

        init(_ sql: String, _ params: [PGValue?], prepare: Bool = true) throws {
            guard !sql.containsNUL else { throw PGError(.invalidArgument, "SQL text contains a NUL byte") }
            var texts: [String?] = []
            var types: [UInt32] = []
            texts.reserveCapacity(params.count)
            types.reserveCapacity(params.count)
            for (i, p) in params.enumerated() {
                guard let p else { texts.append(nil); types.append(0); continue }
                guard let text = p.textEncoding else {
                    throw PGError(.invalidArgument, "parameter $\(i + 1) contains a NUL byte (PostgreSQL text cannot hold one)")
                }
                texts.append(text)
                types.append(p.typeOID)
            }
            self.sql = sql
            self.texts = texts
            self.types = types
            self.prepare = prepare
        }
    }

    /// Runs one parameterized statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ params: [PGValue?] = []) throws -> Int {
        try query(sql, params).affectedRows
    }

    /// Runs trusted SQL that may hold several statements, without parameters (simple query
    /// protocol). For migrations and fixed setup SQL only: never build `sql` from input.
    public func executeScript(_ sql: String) throws {
        try sendQueued()
        guard let conn = handle else { throw PGError(.unavailable, "connection is closed") }
        guard !sql.containsNUL else { throw PGError(.invalidArgument, "SQL text contains a NUL byte") }
        guard LibPQ.sendQuery(conn, sql) else { throw failure(PGError(result: nil, connection: conn)) }
        _ = try collectResults(conn)
    }

    /// Changes the session's `statement_timeout` (`.zero`: none); the client deadline follows.
    public func setStatementTimeout(_ timeout: Duration) throws {
        let ms = max(0, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        try query("SELECT set_config('statement_timeout', $1, false)", [.text(String(ms))])
        statementTimeout = timeout
    }

    /// Makes a connection that sat idle in a pool fit for reuse: reads what the server sent in
    /// the meantime without blocking (a termination notice after a restart, EOF). False when it
    /// is closed or broken and must be replaced.
    func refreshIfIdle() -> Bool {
        guard let conn = handle, LibPQ.isConnectionOK(conn) else { return false }
        var rounds = 0
        while rounds < 8, LibPQ.waitReadable(conn, timeoutMs: 0) == 1 {
            if !LibPQ.consumeInput(conn) { return false }
            rounds += 1
        }
        return LibPQ.isConnectionOK(conn)
    }

    /// Waits up to `timeoutMs` for `NOTIFY` messages on a connection that `LISTEN`s (and runs
    /// nothing else meanwhile). Returns how many arrived (0 on timeout); throws `.unavailable`
    /// when the connection broke (it is then closed).
    public func waitForNotifications(timeoutMs: Int32) throws -> Int {
        guard let conn = handle, LibPQ.isConnectionOK(conn) else { throw PGError(.unavailable, "connection is closed") }
        var n = LibPQ.drainNotifications(conn)
        if n > 0 { return n }
        switch LibPQ.waitReadable(conn, timeoutMs: timeoutMs) {
        case 0: return 0
        case 1:
            guard LibPQ.consumeInput(conn), LibPQ.isConnectionOK(conn) else {
                throw failure(PGError(.unavailable, "listening connection lost"), drop: true)
            }
            n = LibPQ.drainNotifications(conn)
            return n
        default:
            throw failure(PGError(.unavailable, "waiting for notifications failed"), drop: true)
        }
    }

    // MARK: - Results

    private func collectResults(_ conn: OpaquePointer) throws -> PGRows {
        let deadline = clientDeadline()
        var rows: PGRows?
        var firstError: PGError?
        while true {
            try waitUntilNotBusy(conn, deadline: deadline)
            guard let result = LibPQ.getResult(conn) else { break }
            defer { LibPQ.clear(result) }
            switch LibPQ.resultKind(result) {
            case .commandOK, .tuples:
                if firstError == nil { rows = Self.copyRows(result) }
            case .error:
                if firstError == nil { firstError = PGError(result: result, connection: conn) }
            case .unexpected, .pipelineSync, .pipelineAborted:
                // COPY and other sub-protocols are not supported: the session cannot be resumed.
                throw failure(PGError(.unavailable, "unsupported result (COPY?); connection dropped"), drop: true)
            }
        }
        if let firstError { throw failure(firstError) }
        guard LibPQ.isConnectionOK(conn) else { throw failure(PGError(result: nil, connection: conn)) }
        return rows ?? PGRows(columns: PGColumns(names: [], typeOIDs: []), cells: [], affectedRows: 0, commandTag: "")
    }

    /// Sends `statements` as one pipeline (libpq pipeline mode: every statement, then a Sync, in
    /// one flush) and reads their results in order. Returns the last statement's rows; throws the
    /// first failure (the statements after it were skipped by the server). Anything that breaks
    /// the protocol midway drops the connection. While output is pending the socket is polled for
    /// reading too, so a server busy answering never waits on us (no send/receive deadlock).
    private func runPipeline(_ conn: OpaquePointer, _ statements: [Statement]) throws -> PGRows {
        func broken(_ what: String) -> PGError {
            failure(LibPQ.isConnectionOK(conn) ? PGError(.unavailable, "PostgreSQL pipeline failed: \(what)")
                                               : PGError(result: nil, connection: conn), drop: true)
        }
        guard LibPQ.enterPipelineMode(conn) else { throw broken("could not enter pipeline mode") }
        guard LibPQ.setNonBlocking(conn, true) else { throw broken("could not make the socket non-blocking") }
        // Each statement runs under its prepared name; one not yet prepared (and under the cap)
        // is prepared first, in the same pipeline. Its name counts once the server says so.
        var steps: [(prepares: Statement.Key?, name: String)] = []
        var named: [Statement.Key: String] = [:]
        for statement in statements {
            let key = statement.key
            var name = prepared[key] ?? named[key]
            if name == nil, statement.prepare, prepared.count + named.count < Self.maxPrepared {
                statementsNamed += 1
                let fresh = "pixtrack_\(statementsNamed)"
                guard LibPQ.sendPrepare(conn, fresh, statement.sql, statement.types) else { throw broken("a statement could not be queued") }
                steps.append((key, fresh))
                named[key] = fresh
                name = fresh
            }
            let sent = withCStringArray(statement.texts) { values in
                name.map { LibPQ.sendQueryPrepared(conn, $0, statement.texts.count, values) }
                    ?? LibPQ.sendQueryParams(conn, statement.sql, statement.types, values)
            }
            guard sent else { throw broken("a statement could not be queued") }
            steps.append((nil, ""))
        }
        guard LibPQ.pipelineSync(conn) else { throw broken("the sync could not be queued") }
        var deadline = clientDeadline()
        while true {
            let pending = LibPQ.flush(conn)
            if pending == 0 { break }
            guard pending == 1 else { throw broken("sending failed") }
            let ready = LibPQ.waitIO(conn, timeoutMs: try pollTimeout(until: deadline))
            if ready < 0 { throw broken("waiting for the socket failed") }
            if ready == 0 { continue }
            if ready & 1 != 0, !LibPQ.consumeInput(conn) { throw broken("reading failed") }
        }
        guard LibPQ.setNonBlocking(conn, false) else { throw broken("could not restore blocking mode") }

        // Results: each statement's end with a NULL from PQgetResult, the Sync's end the pipeline.
        let last = steps.count - 1
        var index = 0
        var rows: PGRows?
        var firstError: PGError?
        while true {
            try waitUntilNotBusy(conn, deadline: deadline)
            guard let result = LibPQ.getResult(conn) else {
                index += 1
                if index > steps.count || !LibPQ.isConnectionOK(conn) { throw broken("ended without its sync") }
                continue
            }
            defer { LibPQ.clear(result) }
            deadline = clientDeadline()
            switch LibPQ.resultKind(result) {
            case .pipelineSync:
                guard LibPQ.exitPipelineMode(conn) else { throw broken("results left after the sync") }
                if let firstError { throw failure(firstError) }
                return rows ?? PGRows(columns: PGColumns(names: [], typeOIDs: []), cells: [], affectedRows: 0, commandTag: "")
            case .commandOK, .tuples:
                // A statement prepared is the session's, even if the transaction later rolls back.
                if index < steps.count, let key = steps[index].prepares { prepared[key] = steps[index].name }
                if index == last && firstError == nil { rows = Self.copyRows(result) }
            case .error:
                if firstError == nil { firstError = PGError(result: result, connection: conn) }
            case .pipelineAborted:
                continue
            case .unexpected:
                throw broken("unsupported result (COPY?)")
            }
        }
    }

    /// The client-side deadline for the next answer (nil when `statement_timeout` is off).
    private func clientDeadline() -> ContinuousClock.Instant? {
        statementTimeout == .zero ? nil : .now + statementTimeout + clientTimeoutMargin
    }

    /// Milliseconds left until `deadline` for `poll` (-1: none). When it has passed, the
    /// connection is dropped (a late answer would belong to nobody) and `.timeout` thrown.
    private func pollTimeout(until deadline: ContinuousClock.Instant?) throws -> Int32 {
        guard let deadline else { return -1 }
        let remaining = deadline - .now
        if remaining <= .zero {
            throw failure(PGError(.timeout, "no answer from PostgreSQL within the client deadline"), drop: true)
        }
        let (s, atto) = remaining.components
        return Int32(clamping: s * 1000 + atto / 1_000_000_000_000_000 + 1)
    }

    /// Waits with `poll` until libpq has a whole result, honouring the client-side deadline.
    private func waitUntilNotBusy(_ conn: OpaquePointer, deadline: ContinuousClock.Instant?) throws {
        while LibPQ.isBusy(conn) {
            switch LibPQ.waitReadable(conn, timeoutMs: try pollTimeout(until: deadline)) {
            case 0: continue
            case 1: if !LibPQ.consumeInput(conn) { return } // the next PQgetResult reports the failure
            default: throw failure(PGError(.unavailable, "waiting for PostgreSQL failed"), drop: true)
            }
        }
    }

    /// Drops the connection when the error leaves it unusable, then hands the error back.
    private func failure(_ error: PGError, drop: Bool = false) -> PGError {
        if drop || error.isConnectionFailure || !isUsable { close() }
        return error
    }

    static func copyRows(_ result: OpaquePointer) -> PGRows {
        let width = LibPQ.columnCount(result)
        let count = LibPQ.rowCount(result)
        let columns = PGColumns(names: (0..<width).map { LibPQ.columnName(result, $0) },
                                typeOIDs: (0..<width).map { LibPQ.columnType(result, $0) })
        var cells: [String?] = []
        cells.reserveCapacity(width * count)
        for r in 0..<count {
            for c in 0..<width { cells.append(LibPQ.value(result, r, c)) }
        }
        let affected = width > 0 ? count : LibPQ.affectedRows(result)
        return PGRows(columns: columns, cells: cells, affectedRows: affected, commandTag: LibPQ.commandTag(result))
    }
}

/// Calls `body` with a C string array (`const char *const *`) for `strings`, followed by one
/// extra NULL entry (the terminator libpq's keyword arrays need; never a dangling empty array).
/// nil entries stay NULL. The copies live exactly as long as the call.
func withCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    // Every statement's parameters pass through here: one buffer holds them all, NUL-terminated
    // one after another, instead of a copy (and a bridging array) per parameter.
    var total = 0
    for s in strings { if let s { total += s.utf8.count + 1 } }
    return withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: strings.count + 1) { pointers in
        withUnsafeTemporaryAllocation(byteCount: max(total, 1), alignment: 1) { bytes in
            // libpq has copied them once `body` returns; a password or a customer's data is not
            // left behind in freed memory.
            defer { memset(bytes.baseAddress!, 0, bytes.count) }
            var offset = 0
            for (i, string) in strings.enumerated() {
                guard var string else {
                    pointers[i] = nil
                    continue
                }
                let start = bytes.baseAddress! + offset
                let n = string.withUTF8 { u -> Int in
                    if let base = u.baseAddress { start.copyMemory(from: base, byteCount: u.count) }
                    return u.count
                }
                start.storeBytes(of: 0, toByteOffset: n, as: UInt8.self)
                pointers[i] = UnsafePointer(start.assumingMemoryBound(to: CChar.self))
                offset += n + 1
            }
            pointers[strings.count] = nil
            return body(UnsafePointer(pointers.baseAddress!))
        }
    }
}
