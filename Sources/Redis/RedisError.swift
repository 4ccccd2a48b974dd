import Glibc
import RPC

/// A Redis failure. No case carries a URL, password, key or value (server error replies are
/// cut before echoed arguments): descriptions are safe to log.
public enum RedisError: Error, Sendable, Hashable, CustomStringConvertible, RPCErrorConvertible {
    /// Cannot connect (refused, unreachable, connect timed out) or the connection broke (EOF,
    /// reset). The connection is dropped; the next call reconnects.
    case unavailable(String)
    /// The server did not answer within the command timeout, or no pooled connection became
    /// free within the acquire timeout.
    case timeout(String)
    /// The reply could not be parsed, or the server answered out of protocol.
    case `protocol`(String)
    /// An error reply from the server (`ERR …`, `WRONGTYPE …`, `NOAUTH …`).
    case server(String)
    /// A bad URL or argument, rejected before any I/O.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .unavailable(let m): "RedisError(unavailable): \(m)"
        case .timeout(let m): "RedisError(timeout): \(m)"
        case .protocol(let m): "RedisError(protocol): \(m)"
        case .server(let m): "RedisError(server): \(m)"
        case .invalidArgument(let m): "RedisError(invalidArgument): \(m)"
        }
    }

    /// `.server` for an error reply, without the arguments Redis sometimes echoes
    /// (`ERR unknown command 'X', with args beginning with: 'key' …`).
    static func server(reply message: String) -> RedisError {
        if let echo = message.firstRange(of: ", with args beginning with") {
            return .server(String(message[..<echo.lowerBound]))
        }
        return .server(message)
    }

    /// True when the connection that produced this error must not be reused.
    var breaksConnection: Bool {
        switch self {
        case .unavailable, .timeout, .protocol: true
        case .server, .invalidArgument: false
        }
    }

    /// The status a client should see (generic messages; detail belongs in the log).
    public var rpcError: RPCError {
        switch self {
        case .unavailable, .timeout: RPCError(.unavailable, "cache unavailable", cause: self)
        default: RPCError(.internal, "internal error", cause: self)
        }
    }
}

extension RedisError {
    /// Maps a failed hiredis context to a typed error: the one place where hiredis's error flags
    /// become a `RedisError`. `connecting` tells a failed connect (always `.unavailable`) from a
    /// failed command.
    init(hiredisCode code: Int32, text: String, errno savedErrno: Int32, connecting: Bool) {
        if code == Hiredis.errIO, savedErrno == EAGAIN || savedErrno == EWOULDBLOCK, !connecting {
            self = .timeout("no answer from Redis within the command timeout")
        } else if code == Hiredis.errIO, savedErrno == ETIMEDOUT || savedErrno == EINPROGRESS {
            self = connecting ? .unavailable("connect timed out") : .timeout("Redis I/O timed out")
        } else if code == Hiredis.errProtocol {
            self = .protocol("bad reply from Redis: \(text)")
        } else if code == Hiredis.errEOF {
            self = .unavailable("Redis closed the connection")
        } else if code == Hiredis.errOOM {
            self = .unavailable("out of memory in the Redis client")
        } else {
            self = .unavailable(connecting ? "cannot connect to Redis: \(text)" : "Redis I/O failed: \(text)")
        }
    }
}
