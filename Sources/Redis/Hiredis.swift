import CHiredis

/// Every raw hiredis 0.14.1 call the module makes. `redisContext *` travels as an
/// `OpaquePointer`; replies are copied into `RedisReply` and freed before returning, so no
/// hiredis pointer leaves this file.
///
/// The I/O calls go through the shim's SIGPIPE-guarded wrappers and report `errno` as the call
/// left it (hiredis turns `EAGAIN` from a socket timeout into a generic I/O error).
enum Hiredis {
    /// The corresponding C function is `redisConnectWithTimeout` (blocks up to `timeoutMs`).
    /// Returns nil only when out of memory; otherwise check `failure(_:)`.
    static func connect(host: String, port: Int, timeoutMs: Int, errno: inout Int32) -> OpaquePointer? {
        pixtrack_redis_connect(host, Int32(clamping: port), timeoutMs, &errno).map { OpaquePointer($0) }
    }

    /// The corresponding C function is `redisConnectFd` (a connected descriptor, e.g. the
    /// plaintext end of the TLS tunnel; the context owns it from here).
    static func connect(fd: Int32) -> OpaquePointer? { redisConnectFd(fd).map { OpaquePointer($0) } }

    /// The corresponding C function is `redisSetTimeout` (`SO_RCVTIMEO`/`SO_SNDTIMEO`).
    static func setTimeout(_ context: OpaquePointer, timeoutMs: Int) -> Bool {
        pixtrack_redis_set_timeout(ctx(context), timeoutMs) == REDIS_OK
    }

    /// The corresponding C function is `redisEnableKeepAlive`.
    static func enableKeepAlive(_ context: OpaquePointer) { _ = redisEnableKeepAlive(ctx(context)) }

    /// The corresponding C function is `redisFree`.
    static func free(_ context: OpaquePointer) { redisFree(ctx(context)) }

    /// The context's error (`err`, `errstr`), nil when none.
    static func failure(_ context: OpaquePointer) -> (code: Int32, text: String)? {
        let code = pixtrack_redis_err(ctx(context))
        return code == 0 ? nil : (code, String(cString: pixtrack_redis_errstr(ctx(context))))
    }

    /// The corresponding C function is `redisCommandArgv`; nil means the context failed.
    static func command(_ context: OpaquePointer, _ args: [[UInt8]], errno: inout Int32) -> RedisReply? {
        let reply = withArgv(args) { argc, argv, lengths in
            pixtrack_redis_command_argv(ctx(context), argc, argv, lengths, &errno)
        }
        return reply.map(takeReply)
    }

    /// The corresponding C function is `redisAppendCommandArgv` (buffers only, no I/O).
    static func append(_ context: OpaquePointer, _ args: [[UInt8]]) -> Bool {
        withArgv(args) { argc, argv, lengths in redisAppendCommandArgv(ctx(context), argc, argv, lengths) } == REDIS_OK
    }

    /// The corresponding C function is `redisGetReply` (flushes appended commands first).
    static func getReply(_ context: OpaquePointer, errno: inout Int32) -> RedisReply? {
        var reply: UnsafeMutablePointer<redisReply>?
        guard pixtrack_redis_get_reply(ctx(context), &reply, &errno) == REDIS_OK, let reply else { return nil }
        return takeReply(reply)
    }

    /// Takes the descriptor out of a connected context (`pixtrack_redis_take_fd`): freeing the
    /// context afterwards leaves it open, owned by the caller.
    static func takeDescriptor(_ context: OpaquePointer) -> Int32 { pixtrack_redis_take_fd(ctx(context)) }

    // MARK: - The protocol reader (no I/O: bytes in, replies out)

    /// The corresponding C function is `redisReaderCreate` (default reply objects); nil when out
    /// of memory. Free it with `freeReader`.
    static func makeReader() -> UnsafeMutablePointer<redisReader>? { redisReaderCreate() }

    /// The corresponding C function is `redisReaderFree`.
    static func freeReader(_ reader: UnsafeMutablePointer<redisReader>) { redisReaderFree(reader) }

    /// The corresponding C function is `redisReaderFeed` (copies the bytes); false when out of memory.
    static func feed(_ reader: UnsafeMutablePointer<redisReader>, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return true }
        return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK
    }

    /// What the reader holds next.
    enum ReaderOutput {
        case reply(RedisReply)
        /// No complete reply buffered yet.
        case needMore
        /// The byte stream is not RESP (the reader's error text).
        case failed(String)
    }

    /// The corresponding C function is `redisReaderGetReply`; the reply is copied and freed.
    static func nextReply(_ reader: UnsafeMutablePointer<redisReader>) -> ReaderOutput {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            return .failed(String(cString: pixtrack_reader_errstr(reader)))
        }
        guard let raw else { return .needMore }
        return .reply(takeReply(raw.assumingMemoryBound(to: redisReply.self)))
    }

    /// The hiredis error flags (`REDIS_ERR_*` in `read.h`).
    static let errIO = Int32(REDIS_ERR_IO)
    static let errEOF = Int32(REDIS_ERR_EOF)
    static let errProtocol = Int32(REDIS_ERR_PROTOCOL)
    static let errOOM = Int32(REDIS_ERR_OOM)

    private static func ctx(_ p: OpaquePointer) -> UnsafeMutablePointer<redisContext> { UnsafeMutablePointer(p) }

    /// Copies a reply tree into Swift values, then frees it with `freeReplyObject`.
    private static func takeReply(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        defer { freeReplyObject(reply) }
        return copy(reply)
    }

    private static func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        let raw = UnsafeRawBufferPointer(start: r.str, count: r.str == nil ? 0 : r.len)
        switch r.type {
        case REDIS_REPLY_STRING: return .bulk(Array(raw))
        // Text straight from hiredis's buffer: a short status ("OK") costs no allocation at all.
        case REDIS_REPLY_STATUS: return .status(String(decoding: raw, as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: raw, as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(r.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            return .array((0..<r.elements).map { i in r.element[i].map(copy) ?? .null })
        default: return .error("unsupported reply type \(r.type)")
        }
    }

    /// Calls `body` with `argc`, `argv` and `argvlen` pointing into one buffer holding all the
    /// arguments (binary-safe: lengths are explicit). Valid only during the call.
    private static func withArgv<R>(_ args: [[UInt8]],
                                    _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        var flat: [UInt8] = []
        var offsets: [Int] = []
        var lengths: [Int] = []
        for a in args {
            offsets.append(flat.count)
            lengths.append(a.count)
            flat.append(contentsOf: a)
        }
        flat.append(0) // never an empty buffer, so there is always a base address
        lengths.append(0)
        return flat.withUnsafeBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { base + $0 } + [nil]
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { body(Int32(args.count), argvBuffer.baseAddress!, $0.baseAddress!) }
            }
        }
    }
}
