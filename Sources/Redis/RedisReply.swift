/// One Redis reply (RESP2), copied out of hiredis.
public enum RedisReply: Sendable, Hashable {
    /// A bulk string: arbitrary bytes.
    case bulk([UInt8])
    /// A status line (`OK`, `PONG`, `QUEUED`).
    case status(String)
    /// An integer reply (`INCR`, `TTL`, `DEL`, …).
    case integer(Int64)
    /// A multi-bulk reply (`LRANGE`, `MGET`), elements in order.
    case array([RedisReply])
    /// The nil bulk string or nil array (`GET` of a missing key).
    case null
    /// An error reply (`ERR …`, `WRONGTYPE …`). `RedisClient.command` throws it as
    /// `RedisError.server`; pipelines keep it in place.
    case error(String)

    /// The text of a bulk string (UTF-8, invalid bytes replaced) or status line.
    public var string: String? {
        switch self {
        case .bulk(let b): String(decoding: b, as: UTF8.self)
        case .status(let s): s
        default: nil
        }
    }

    /// The bytes of a bulk string.
    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    /// An integer reply, or a bulk string holding a base-10 integer.
    public var integer: Int64? {
        switch self {
        case .integer(let i): i
        case .bulk(let b): Int64(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// True for `.null`.
    public var isNull: Bool { self == .null }

    /// The message of an error reply.
    public var errorMessage: String? {
        if case .error(let m) = self { return m }
        return nil
    }
}
