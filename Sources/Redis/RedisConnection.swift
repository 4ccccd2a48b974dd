import Glibc
import TLS

/// One blocking Redis connection (owns a `redisContext *`), bounded by the connect and command
/// timeouts: use it from a thread of its own, never from Swift's cooperative pool, and never from
/// two threads at once (hence not `Sendable`). `RedisClient` uses it only to connect (TCP or the
/// TLS tunnel, `AUTH`, `SELECT`) on a connect thread, then takes the descriptor.
///
/// Any I/O failure closes the connection: a reply that arrives after a timeout would otherwise
/// be read as the answer to the next command.
public final class RedisConnection {
    private var context: OpaquePointer?

    private init(context: OpaquePointer) { self.context = context }

    /// Connects, sets the command timeout, then `AUTH` and `SELECT` as configured.
    /// - Throws: `RedisError.unavailable` (refused, unreachable, connect timeout), `.timeout`,
    ///   `.server` (e.g. a wrong password).
    public static func connect(_ configuration: RedisConfiguration) throws -> RedisConnection {
        var savedErrno: Int32 = 0
        let made: OpaquePointer?
        if configuration.tls {
            let context: TLSContext
            do {
                context = try TLSContext(trusting: configuration.caFile)
            } catch {
                throw RedisError.unavailable(String(describing: error))
            }
            let fd = try RedisTLSTunnel.open(host: configuration.host, port: configuration.port,
                                             timeout: configuration.connectTimeout, context: context)
            made = Hiredis.connect(fd: fd)
            if made == nil { Glibc.close(fd) }
        } else {
            made = Hiredis.connect(host: configuration.host, port: configuration.port,
                                   timeoutMs: configuration.connectTimeout.redisMilliseconds, errno: &savedErrno)
        }
        guard let context = made else {
            throw RedisError.unavailable("out of memory in the Redis client")
        }
        if let failure = Hiredis.failure(context) {
            Hiredis.free(context)
            throw RedisError(hiredisCode: failure.code, text: failure.text, errno: savedErrno, connecting: true)
        }
        let connection = RedisConnection(context: context)
        guard Hiredis.setTimeout(context, timeoutMs: configuration.commandTimeout.redisMilliseconds) else {
            connection.close()
            throw RedisError.unavailable("cannot set the Redis socket timeout")
        }
        if !configuration.tls { Hiredis.enableKeepAlive(context) }  // the tunnel keeps its TCP socket alive
        if let password = configuration.password {
            let auth = configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            try connection.expectOK(auth, what: "AUTH")
        }
        if configuration.database != 0 {
            try connection.expectOK(["SELECT", String(configuration.database)], what: "SELECT")
        }
        return connection
    }

    deinit { close() }

    /// Closes the connection (idempotent).
    public func close() {
        if let context { Hiredis.free(context) }
        context = nil
    }

    /// Hands the connected descriptor to the caller (who must close it) and closes the rest of
    /// the connection; nil when already closed. Used by the non-blocking client, which connects
    /// with this class and then drives the socket itself.
    func takeDescriptor() -> Int32? {
        guard let context else { return nil }
        let fd = Hiredis.takeDescriptor(context)
        close()
        return fd >= 0 ? fd : nil
    }

    /// False once closed or broken.
    public var isUsable: Bool { context != nil }

    /// Sends one command and reads its reply. An error reply is returned as `.error`, not thrown.
    /// - Throws: `RedisError` `.unavailable`, `.timeout` or `.protocol` (the connection is then closed).
    public func command(_ args: [[UInt8]]) throws -> RedisReply {
        guard let context else { throw RedisError.unavailable("connection is closed") }
        guard !args.isEmpty else { throw RedisError.invalidArgument("empty command") }
        var savedErrno: Int32 = 0
        guard let reply = Hiredis.command(context, args, errno: &savedErrno) else {
            throw failure(context, savedErrno)
        }
        return reply
    }

    /// Sends all commands in one write, then reads one reply per command, in order. Error
    /// replies stay in place as `.error`.
    /// - Throws: `RedisError` `.unavailable`, `.timeout` or `.protocol` (the connection is then closed).
    public func pipeline(_ commands: [[[UInt8]]]) throws -> [RedisReply] {
        guard let context else { throw RedisError.unavailable("connection is closed") }
        guard !commands.contains(where: \.isEmpty) else { throw RedisError.invalidArgument("empty command in pipeline") }
        for args in commands where !Hiredis.append(context, args) {
            close()
            throw RedisError.unavailable("out of memory in the Redis client")
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var savedErrno: Int32 = 0
            guard let reply = Hiredis.getReply(context, errno: &savedErrno) else { throw failure(context, savedErrno) }
            replies.append(reply)
        }
        return replies
    }

    private func expectOK(_ args: [String], what: String) throws {
        let reply = try command(args.map { Array($0.utf8) })
        guard case .status = reply else {
            close()
            if let message = reply.errorMessage {
                // Keep only the error's first word (NOAUTH, WRONGPASS, ERR): never echo arguments.
                throw RedisError.server("\(what) failed: \(message.prefix { $0 != " " })")
            }
            throw RedisError.protocol("\(what) got an unexpected reply")
        }
    }

    private func failure(_ context: OpaquePointer, _ savedErrno: Int32) -> RedisError {
        let info = Hiredis.failure(context) ?? (code: Hiredis.errIO, text: "unknown I/O error")
        close()
        return RedisError(hiredisCode: info.code, text: info.text, errno: savedErrno, connecting: false)
    }
}

extension RedisConnection {
    /// `command` with text arguments (UTF-8).
    public func command(_ args: [String]) throws -> RedisReply { try command(args.map { Array($0.utf8) }) }
}
