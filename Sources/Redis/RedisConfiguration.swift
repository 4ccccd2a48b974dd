/// Where Redis is and how patient to be with it.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// An IP address, or a name: name lookups (`getaddrinfo`) are not bounded by `connectTimeout`.
    public var host: String
    public var port: Int
    /// Selected with `SELECT` after connecting (skipped for 0).
    public var database: Int
    /// Sent with `AUTH` after connecting; never logged.
    public var password: String?
    /// Redis 6 ACL user (`AUTH user password`); nil: the default user.
    public var username: String?
    /// Connections at most. Commands are pipelined on them, so a few carry many concurrent
    /// callers; a new one opens only when every open one has many commands outstanding.
    public var poolSize: Int = 8
    /// Commands (a pipeline counts once) outstanding on one connection at most; calls beyond
    /// `poolSize` times this wait up to `acquireTimeout` for room, in a line of the same bound.
    public var maxCommandsPerConnection: Int = 1024
    /// Bound on establishing a TCP connection.
    public var connectTimeout: Duration = .milliseconds(500)
    /// How long a connection with commands outstanding may go without a reply; then it closes
    /// and they fail with `.timeout` (a late reply would be read as the next command's).
    public var commandTimeout: Duration = .milliseconds(500)
    /// How long a call waits for room on a connection (all `poolSize` open and full, or a
    /// blocking command such as `BLPOP` holding them).
    public var acquireTimeout: Duration = .seconds(1)
    /// After a failed connect, calls fail at once with `.unavailable` for this long instead of
    /// each waiting for a connect attempt (Redis is an accelerator: fail fast). `.zero`: always try.
    public var reconnectBackoff: Duration = .milliseconds(250)
    /// `rediss://`: TLS, the server's certificate verified against `caFile` (PEM; nil: the
    /// system's CA store) and the host name of the URL.
    public var tls = false
    public var caFile: String?

    public init(host: String = "127.0.0.1", port: Int = 6379, database: Int = 0) {
        self.host = host
        self.port = port
        self.database = database
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]` (IPv6 hosts in brackets);
    /// `rediss://` is the same over TLS.
    /// - Throws: `RedisError.invalidArgument` (the message never echoes the URL).
    public init(url: String) throws {
        let scheme = url.hasPrefix("rediss://") ? "rediss://" : "redis://"
        guard url.hasPrefix(scheme) else { throw RedisError.invalidArgument("Redis URL must start with redis:// or rediss://") }
        var rest = Substring(url.dropFirst(scheme.count))
        self.init()
        tls = scheme == "rediss://"
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = String(credentials[..<colon])
                username = user.isEmpty ? nil : try Self.percentDecoded(user)
                password = try Self.percentDecoded(String(credentials[credentials.index(after: colon)...]))
            } else if !credentials.isEmpty {
                password = try Self.percentDecoded(String(credentials))
            }
        }
        if let q = rest.firstIndex(of: "?") { rest = rest[..<q] }
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw RedisError.invalidArgument("Redis URL database must be a number") }
                database = n
            }
        }
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
            if authority.hasPrefix(":") { try setPort(authority.dropFirst()) } else if !authority.isEmpty {
                throw RedisError.invalidArgument("Redis URL has a malformed host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            try setPort(authority[authority.index(after: colon)...])
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw RedisError.invalidArgument("Redis URL has no host") }
    }

    private mutating func setPort(_ text: Substring) throws {
        guard let p = Int(text), (1...65535).contains(p) else { throw RedisError.invalidArgument("Redis URL port is invalid") }
        port = p
    }

    private static func percentDecoded(_ s: String) throws -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else {
                throw RedisError.invalidArgument("Redis URL has a malformed percent-escape")
            }
            out.append(v)
            bytes = bytes.dropFirst(2)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Everything but the password.
    public var description: String {
        "RedisConfiguration(\(host):\(port)/\(database), poolSize: \(poolSize), connectTimeout: \(connectTimeout), "
            + "commandTimeout: \(commandTimeout), auth: \(password == nil ? "none" : "yes"), tls: \(tls ? "on" : "off"))"
    }
}

extension Duration {
    /// Whole milliseconds, rounded up, at least 1 (a zero socket timeout would mean "none").
    var redisMilliseconds: Int {
        let (s, atto) = components
        return max(1, Int(s) * 1000 + Int((atto + 999_999_999_999_999) / 1_000_000_000_000_000))
    }
}
