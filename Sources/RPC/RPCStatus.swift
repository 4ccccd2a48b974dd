/// gRPC status codes, as in the gRPC spec (`doc/statuscodes.md`).
public enum RPCCode: Int, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    /// The upper-snake name used by gRPC tooling (`INVALID_ARGUMENT`).
    public var name: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }

    public var description: String { name }
}

/// An error that reaches the caller as a gRPC status.
///
/// `message` is sent to the client: it must never carry SQL, connection strings or secrets.
/// An error that knows the status a client should see for it (generic words; the detail stays
/// in `cause`, for the log). Handlers let such errors propagate: the transport maps them
/// (`RPCError(mapping:)`), so no handler converts them by hand.
public protocol RPCErrorConvertible: Error {
    var rpcError: RPCError { get }
}

/// `cause` stays on the server (logged), never sent.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public var code: RPCCode
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: RPCCode, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { "\(code.name): \(message)" }

    /// Maps any error to the status the client sees: an `RPCError` as it is, an
    /// `RPCErrorConvertible` (storage, plugin errors) by its own mapping. Unknown errors become
    /// `INTERNAL` with a generic message; their detail belongs in the server log only.
    public init(mapping error: any Error) {
        if let rpc = error as? RPCError {
            self = rpc
        } else if let c = error as? any RPCErrorConvertible {
            self = c.rpcError
        } else if error is CancellationError {
            self.init(.cancelled, "call cancelled")
        } else {
            self.init(.internal, "internal error", cause: nil)
        }
    }
}
