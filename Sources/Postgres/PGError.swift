import RPC

/// A PostgreSQL failure, classified so callers can react (retry, map to a gRPC status) without
/// parsing text.
///
/// `description` is safe to log and to show: it carries the code, the SQLSTATE, our own summary
/// and schema object names (constraint, table, column) only. It never includes the connection
/// URL, credentials, SQL text or parameter values. The server's own message, which may quote
/// data (`invalid input syntax for type integer: "…"`), is kept apart in `serverMessage`.
public struct PGError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, in the terms a caller acts on. Extensible: match with `==` or `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The server cannot be reached or the connection broke (SQLSTATE class 08, 57P01–57P03,
        /// 53300, or libpq reporting a bad connection). The connection is discarded; retry later.
        public static let unavailable = Code("unavailable")
        /// A statement failed for another reason (syntax, data exception, …).
        public static let queryFailed = Code("queryFailed")
        /// An integrity constraint rejected the statement (class 23: unique, foreign key, not
        /// null, check, exclusion). `sqlState` and `constraint` say which.
        public static let constraintViolation = Code("constraintViolation")
        /// Serialization failure (40001) or deadlock (40P01): the transaction may be retried.
        public static let serializationFailure = Code("serializationFailure")
        /// `statement_timeout` (57014), `lock_timeout` (55P03), or the client-side deadline.
        public static let timeout = Code("timeout")
        /// Rejected before reaching the server (e.g. a NUL byte in a text parameter).
        public static let invalidArgument = Code("invalidArgument")
        /// A row value does not have the type the getter asked for, or the column is unknown.
        public static let decoding = Code("decoding")
        /// No pooled connection became free within the acquire timeout.
        public static let poolTimeout = Code("poolTimeout")
        /// The pool was closed.
        public static let poolClosed = Code("poolClosed")
        /// A migration is invalid, was changed after being applied, or failed.
        public static let migration = Code("migration")
    }

    /// The classification to act on.
    public var code: Code
    /// The five-character SQLSTATE when the server sent one.
    public var sqlState: String?
    /// Our own summary: never data, SQL or credentials.
    public var message: String
    /// The constraint named in the server's diagnostics (e.g. `users_email_key`).
    public var constraint: String?
    /// The table named in the server's diagnostics.
    public var table: String?
    /// The column named in the server's diagnostics.
    public var column: String?
    /// The server's or libpq's own text. May quote data values or host names: log at debug level
    /// only, never send to a client. Not part of `description`.
    public var serverMessage: String?

    /// An error with our own `message` (never data, SQL or credentials).
    public init(_ code: Code, _ message: String, sqlState: String? = nil, serverMessage: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.serverMessage = serverMessage
    }

    public var description: String {
        var s = "PGError(\(code.name)"
        if let sqlState { s += ", SQLSTATE \(sqlState)" }
        s += "): \(message)"
        if let constraint { s += " [constraint \(constraint)]" }
        if let table { s += " [table \(table)]" }
        if let column { s += " [column \(column)]" }
        return s
    }

    /// True for failures after which the connection must not be reused.
    public var isConnectionFailure: Bool { code == .unavailable }
}

extension PGError {
    /// Maps a failed result (or a failure without one) to a typed error: the one place where
    /// libpq's diagnostics become a `PGError`.
    init(result: OpaquePointer?, connection: OpaquePointer) {
        let connectionBad = !LibPQ.isConnectionOK(connection)
        guard let result else {
            self.init(connectionBad ? .unavailable : .queryFailed,
                      connectionBad ? "connection to PostgreSQL lost" : "statement failed without a result",
                      serverMessage: LibPQ.errorMessage(connection))
            return
        }
        let state = LibPQ.errorField(result, PGDiag.sqlState)
        var code = Self.classify(sqlState: state)
        // libpq reports a lost connection as an error result without SQLSTATE (or with 08xxx).
        if connectionBad { code = .unavailable }
        self.init(code, Self.summary(code: code, sqlState: state), sqlState: state,
                  serverMessage: LibPQ.errorField(result, PGDiag.primary) ?? LibPQ.resultErrorMessage(result))
        constraint = LibPQ.errorField(result, PGDiag.constraint)
        table = LibPQ.errorField(result, PGDiag.table)
        column = LibPQ.errorField(result, PGDiag.column)
    }

    /// The code for a SQLSTATE (nil: a client-side failure, treated as `queryFailed`).
    static func classify(sqlState: String?) -> Code {
        guard let s = sqlState else { return .queryFailed }
        switch s {
        case "57014", "55P03": return .timeout
        case "40001", "40P01": return .serializationFailure
        case "57P01", "57P02", "57P03", "53300": return .unavailable
        default: break
        }
        if s.hasPrefix("08") { return .unavailable }
        if s.hasPrefix("23") { return .constraintViolation }
        return .queryFailed
    }

    static func summary(code: Code, sqlState: String?) -> String {
        switch sqlState {
        case "23505": return "unique constraint violated"
        case "23503": return "foreign key constraint violated"
        case "23502": return "not-null constraint violated"
        case "23514": return "check constraint violated"
        case "23P01": return "exclusion constraint violated"
        case "57014": return "statement canceled (statement_timeout or cancel request)"
        case "55P03": return "lock not available"
        case "40001": return "serialization failure"
        case "40P01": return "deadlock detected"
        case "42601": return "syntax error"
        case "42P01": return "undefined table"
        case "42703": return "undefined column"
        default: break
        }
        switch code {
        case .unavailable: return "PostgreSQL unavailable"
        case .constraintViolation: return "integrity constraint violated"
        default: return sqlState.map { $0.hasPrefix("22") ? "data exception" : "statement failed" } ?? "statement failed"
        }
    }
}

extension PGError: RPCErrorConvertible {
    /// The status a client should see. Messages are generic; the detail belongs in the log.
    public var rpcError: RPCError {
        switch code {
        case .unavailable, .poolTimeout, .poolClosed:
            RPCError(.unavailable, "database unavailable", cause: self)
        case .timeout:
            RPCError(.deadlineExceeded, "database operation timed out", cause: self)
        case .serializationFailure:
            RPCError(.aborted, "concurrent update, retry", cause: self)
        case .constraintViolation where sqlState == "23505":
            RPCError(.alreadyExists, "already exists", cause: self)
        case .constraintViolation:
            RPCError(.failedPrecondition, "conflicts with existing data", cause: self)
        default:
            RPCError(.internal, "internal error", cause: self)
        }
    }
}
