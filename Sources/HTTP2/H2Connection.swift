import SystemCalls
import CNghttp2
import CSystemShims
import Glibc
import RPC
import TLS

/// One accepted TCP connection. Decides HTTP/2 (prior knowledge) versus HTTP/1.1 from the first
/// bytes, then drives an nghttp2 server session. Loop thread only (see `EventLoop`); handler
/// tasks hand results back with `loop.execute`, which is why it is `@unchecked Sendable`.
final class H2Connection: EventLoopHandler, @unchecked Sendable {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    let fd: Int32
    let loop: EventLoop
    let core: ServerCore
    let peer: String
    private var session: OpaquePointer?
    private enum Mode { case sniffing, http2, http1, closed }
    private var mode = Mode.sniffing
    private var sniffed: [UInt8] = []
    /// Bytes for the peer: the protocol's plaintext. Over TLS it is encrypted into `wire` as it
    /// is written; without TLS it goes to the socket as it is.
    private var out: [UInt8] = []
    private var outOffset = 0
    private let tls: TLSSession?
    private var wire: [UInt8] = []
    private var wireOffset = 0
    /// Unsent bytes, plaintext and ciphertext: the back-pressure measure.
    private var unsent: Int { out.count - outOffset + wire.count - wireOffset }
    private var pollingOut = false
    private var flushPending = false
    private var streams: [Int32: H2Stream] = [:]
    /// Streams with a deadline whose headers came in the current read.
    private var deadlinePending: [H2Stream] = []
    private var recent: H2Stream?
    private var draining = false
    private let created = ContinuousClock.now
    private var lastActivity = ContinuousClock.now
    /// Our keep-alive PING went out then and nothing was read since (nil: none outstanding).
    private var pingSentAt: ContinuousClock.Instant?
    /// HTTP/2: when the last open stream closed (nil while one is open).
    private var idleSince: ContinuousClock.Instant? = .now
    /// Request bytes every stream of this connection holds (see `H2Stream.held`).
    private var held = 0
    /// The peer's address without the port, for the per-address connection count.
    let peerAddress: String
    /// Accepted on the public listener: the public HTTP routes only, no RPCs.
    let isPublic: Bool
    /// What the streams' state machines need to know of this connection.
    private let rules: GRPCStreamStateMachine.Rules

    // HTTP/1.1 side door: parsed requests are answered one at a time, in order.
    private var h1: H1Session?
    private var h1Queue: [H1Session.Completed] = []
    private var h1Busy = false
    /// True while `pumpHTTP1` runs (a re-entry from a handler that answered at once returns).
    private var h1Pumping = false
    private var closeAfterWrite = false

    init(fd: Int32, loop: EventLoop, core: ServerCore, peer: String, peerAddress: String, isPublic: Bool = false,
         tls: TLSSession? = nil) {
        self.fd = fd
        self.tls = tls
        self.loop = loop
        self.core = core
        self.peer = peer
        self.peerAddress = peerAddress
        self.isPublic = isPublic
        let cfg = core.config
        rules = GRPCStreamStateMachine.Rules(
            isPublic: isPublic, servesHTTPRoutes: (isPublic ? core.publicHTTPHandler : core.httpHandler) != nil,
            authToken: cfg.authToken, maxHeaderListBytes: cfg.maxHeaderListBytes,
            maxUnauthenticatedMessageBytes: cfg.maxUnauthenticatedMessageBytes)
    }

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    // MARK: socket events

    func handleEvents(_ events: UInt32) {
        loop.assertInLoop()
        if events & EPOLLOUT.rawValue != 0 { writeOut() }
        if mode == .closed { return }
        if events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { readIn() }
    }

    private func readIn() {
        // Hold off reading while the peer is not draining what we wrote (bounded memory).
        if unsent > core.config.maxOutboundBuffer { return }
        let buf = loop.readBuffer
        let n: Int
        switch try? Syscalls.read(fd, into: buf) {
        case .processed(let k): n = k
        case .wouldBlock: return
        case .eof: close(reason: "eof"); return
        case nil: close(reason: "read_error"); return
        }
        lastActivity = .now
        pingSentAt = nil
        if let tls {
            guard decrypt(tls, UnsafeRawBufferPointer(rebasing: buf[0..<n])) else { return }
        } else {
            feed(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        armPendingDeadlines()
        // Answer what this read produced now (inline handlers, SETTINGS/PING acks, errors)
        // instead of after every other connection of this loop iteration: one write either way.
        // A mark left by this read becomes a no-op at the end of the iteration.
        if mode == .http2 { flushPending = false; flush() } else if tls != nil, mode != .closed { writeOut() }
    }

    /// TLS: the read's ciphertext in, its plaintext to `feed` (the loop's read buffer is reused
    /// for it: the ciphertext was copied into OpenSSL first). False once the connection closed.
    private func decrypt(_ tls: TLSSession, _ cipher: UnsafeRawBufferPointer) -> Bool {
        let wasDone = tls.handshakeDone
        let outcome = tls.receive(cipher, scratch: loop.readBuffer) { plain in
            feed(plain)
            return mode != .closed
        }
        if !wasDone, tls.handshakeDone { core.counters.tlsHandshake(alpn: tls.alpn) }
        switch outcome {
        case .ok:
            return mode != .closed
        case .closed:
            close(reason: "eof")
            return false
        case .failed(let reason):
            if tls.handshakeDone {
                core.logger.debug("tls_error", ("peer", peer), ("error", reason))
            } else {
                core.counters.tlsHandshakeFailures.add(1, ordering: .relaxed)
                core.logger.debug("tls_handshake_failed", ("peer", peer), ("error", reason))
                if let hint = Self.plaintextHint(cipher) {
                    // A plaintext client on a TLS port: tell it so in its own protocol.
                    wire = hint
                    wireOffset = 0
                    _ = sendUnsent(flags: Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                    close(reason: "tls_error")
                    return false
                }
            }
            sendOnce()  // the alert, if OpenSSL wrote one
            close(reason: "tls_error")
            return false
        }
    }

    private func feed(_ bytes: UnsafeRawBufferPointer) {
        switch mode {
        case .http2:
            receive(bytes)
        case .sniffing:
            sniffed.append(contentsOf: bytes)
            let k = min(sniffed.count, Self.preface.count)
            if sniffed[0..<k].elementsEqual(Self.preface[0..<k]) {
                guard sniffed.count >= Self.preface.count else { return }
                startHTTP2()
                let first = sniffed
                sniffed = []
                first.withUnsafeBytes { receive($0) }
            } else {
                mode = .http1
                h1 = H1Session(limits: core.config.http1Limits, peer: peer)
                let first = sniffed
                sniffed = []
                first.withUnsafeBytes { feedHTTP1($0) }
            }
        case .http1:
            feedHTTP1(bytes)
        case .closed:
            break
        }
    }

    private func startHTTP2() {
        mode = .http2
        var s: OpaquePointer?
        let ud = Unmanaged.passUnretained(self).toOpaque()
        guard nghttp2_session_server_new2(&s, h2Callbacks, ud, h2Options) == 0, let s else {
            close(reason: "session_alloc"); return
        }
        session = s
        let cfg = core.config
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: UInt32(cfg.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(cfg.maxHeaderListBytes)),
        ]
        _ = nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        _ = nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 16 << 20)
        if draining { beginDrain() }
    }

    private func receive(_ bytes: UnsafeRawBufferPointer) {
        guard let session else { return }
        let rv = nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rv < 0 {
            core.logger.warning("h2_protocol_error", ("peer", peer), ("error", String(cString: nghttp2_strerror(Int32(rv)))))
            core.counters.protocolErrors.add(1, ordering: .relaxed)
            // nghttp2 queued a GOAWAY for most errors: send what is pending, then close.
            flush()
            if mode != .closed { close(reason: "protocol_error") }
        }
    }

    // MARK: output

    func scheduleFlush() {
        guard mode == .http2, !flushPending else { return }
        flushPending = true
        loop.markDirty(self)
    }

    func flushDirty() {
        guard flushPending else { return }  // already flushed since it was marked
        flushPending = false
        flush()
    }

    private func flush() {
        guard mode == .http2, let session else { return }
        while unsent < core.config.maxOutboundBuffer {
            var p: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &p)
            if n < 0 { close(reason: "send_error"); return }
            if n == 0 { break }
            out.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        }
        writeOut()
        if mode == .http2, unsent == 0,
           nghttp2_session_want_read(session) == 0, nghttp2_session_want_write(session) == 0 {
            close(reason: draining ? "drained" : "done")
        }
    }

    private func writeOut() {
        if let tls, !encrypt(tls) { close(reason: "tls_error"); return }
        guard sendUnsent(flags: Int32(MSG_NOSIGNAL)) else { close(reason: "write_error"); return }
        if unsent == 0 {
            if closeAfterWrite { close(reason: "http1_close"); return }
            if pollingOut { pollingOut = false; loop.modify(fd, events: EPOLLIN.rawValue) }
            // We had stopped reading for back-pressure, and may have been asked to flush more.
            if mode == .http2, let session, nghttp2_session_want_write(session) != 0 { scheduleFlush() }
        } else if !pollingOut {
            pollingOut = true
            loop.modify(fd, events: EPOLLIN.rawValue | EPOLLOUT.rawValue)
        }
    }

    /// What a plaintext client that reached a TLS port is told (nil when the bytes are not
    /// plaintext HTTP): an HTTP/2 client gets SETTINGS and a GOAWAY saying why, an HTTP/1.x
    /// one a 400.
    static func plaintextHint(_ first: UnsafeRawBufferPointer) -> [UInt8]? {
        let why = Array("this port speaks TLS: use https (or the client's TLS option)".utf8)
        if first.count >= 3, first.starts(with: preface.prefix(min(first.count, preface.count))) {
            let n = 8 + why.count
            let settings: [UInt8] = [0, 0, 0, 4, 0, 0, 0, 0, 0]
            let goaway: [UInt8] = [UInt8(n >> 16), UInt8((n >> 8) & 0xff), UInt8(n & 0xff), 7, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 1] + why
            return settings + goaway
        }
        guard let c = first.first, (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) else { return nil }
        let body = #"{"code":"failed_precondition","message":"\#(String(decoding: why, as: UTF8.self))"}"#
        return Array("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)".utf8)
    }

    /// TLS: moves `out` into `wire`, encrypted. False on a TLS failure (`out` is left as it was).
    private func encrypt(_ tls: TLSSession) -> Bool {
        if outOffset < out.count {
            let outcome = out.withUnsafeBytes { tls.send(UnsafeRawBufferPointer(rebasing: $0[outOffset...])) }
            guard outcome == .ok else { return false }
            out.removeAll(keepingCapacity: out.capacity <= 1 << 16)
            outOffset = 0
        }
        if tls.pendingOutput > 0 { tls.drain(into: &wire) }
        return true
    }

    /// Writes what the socket takes of the bytes due on the wire (`wire` over TLS, else `out`);
    /// false on a socket error. A buffer written out is emptied.
    private func sendUnsent(flags: Int32) -> Bool {
        let encrypted = tls != nil
        var buffer = encrypted ? wire : out
        var offset = encrypted ? wireOffset : outOffset
        if encrypted { wire = [] } else { out = [] }  // keep the buffer uniquely referenced
        defer {
            if offset == buffer.count {
                buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 16)
                offset = 0
            }
            if encrypted { wire = buffer; wireOffset = offset } else { out = buffer; outOffset = offset }
        }
        while offset < buffer.count {
            let sent = buffer.withUnsafeBytes { try? Syscalls.send(fd, UnsafeRawBufferPointer(rebasing: $0[offset...]), flags: flags) }
            switch sent {
            case .processed(let n): offset += n
            case .wouldBlock, .eof: return true
            case nil: return false
            }
        }
        return true
    }

    /// One non-blocking attempt to write what is due (the last words before a close).
    private func sendOnce() {
        if let tls { _ = encrypt(tls) }
        _ = sendUnsent(flags: Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
    }

    func close(reason: String) {
        loop.assertInLoop()
        guard mode != .closed else { return }
        if let tls, tls.handshakeDone, reason != "write_error", reason != "tls_error" {
            tls.shutdown()  // close_notify: the peer can tell our close from a cut connection
            sendOnce()
        }
        mode = .closed
        for (_, s) in streams {
            if s.machine.connectionClosed() { core.counters.inFlight.subtract(1, ordering: .relaxed) }
            s.deadlineTask?.cancel()
            s.task?.cancel()
            s.inbound?.finish()
            releaseBuffers(s)
        }
        streams.removeAll()
        deadlinePending.removeAll()
        recent = nil
        loop.unregister(fd)
        Syscalls.close(fd)
        core.connectionClosed(peerAddress: peerAddress)
        core.logger.debug("connection_closed", ("peer", peer), ("reason", reason))
    }

    // MARK: HTTP/1.1

    private func feedHTTP1(_ bytes: UnsafeRawBufferPointer) {
        guard let h1, !closeAfterWrite else { return }
        h1.feed(bytes)
        if !h1.interim.isEmpty {
            out += h1.interim
            h1.interim.removeAll()
            writeOut()
        }
        h1Queue += h1.takeCompleted()
        pumpHTTP1()
    }

    /// Starts the queued requests in order, one at a time, or answers a parse failure once the
    /// queue is empty. A handler that answers without suspending (it began at once on this loop)
    /// comes back here through its completion while this call is still running: `h1Pumping`
    /// turns that into the next turn of the loop below, not a deeper call, so a read holding
    /// thousands of pipelined requests never grows the stack.
    private func pumpHTTP1() {
        guard !h1Pumping else { return }
        h1Pumping = true
        defer { h1Pumping = false }
        while mode == .http1, !h1Busy, let h1 {
            if h1Queue.isEmpty {
                if let failure = h1.failure {
                    let response: HTTPResponse = switch failure {
                    case .badRequest(let m): .jsonError(400, code: "invalid_argument", message: m)
                    case .headersTooLarge: .jsonError(431, code: "resource_exhausted", message: "request headers exceed \(core.config.http1Limits.maxHeaderBytes) bytes")
                    case .bodyTooLarge: .jsonError(413, code: "resource_exhausted", message: "request body exceeds \(core.config.http1Limits.maxBodyBytes) bytes")
                    case .versionNotSupported: .jsonError(505, code: "unimplemented", message: "only HTTP/1.0, HTTP/1.1 and HTTP/2 (prior knowledge) are spoken here")
                    }
                    writeHTTP1(response, keepAlive: false)
                }
                return
            }
            let next = h1Queue.removeFirst()
            guard let handler = isPublic ? core.publicHTTPHandler : core.httpHandler else {
                writeHTTP1(.jsonError(404, code: "not_found", message: "no HTTP routes"), keepAlive: next.keepAlive)
                continue
            }
            h1Busy = true
            let request = next.request
            let keepAlive = next.keepAlive && !draining
            // The task prefers this loop: a route that never blocks (`HTTPRoutes.add(onEventLoop:)`)
            // runs here and its answer is written without a hop; the others move to the global
            // executor before their handler starts.
            // (Here, always on this loop: `Task.immediate` when handlers may run on it.)
            if handlerExecutor != nil {
                Task.immediate(executorPreference: loop) { [self] in await runHTTP1(handler, request, keepAlive: keepAlive) }
            } else {
                Task { [self] in await runHTTP1(handler, request, keepAlive: keepAlive) }
            }
        }
    }

    /// An HTTP/1.1 route's task: the handler, then its answer back on the loop.
    private func runHTTP1(_ handler: HTTPHandler, _ request: HTTPRequest, keepAlive: Bool) async {
        let response = await handler(request)
        if loop.inLoop { http1Answered(response, keepAlive: keepAlive) } else { loop.execute { [self] in http1Answered(response, keepAlive: keepAlive) } }
    }

    /// A route's answer, on the loop: written, then the next pipelined request starts.
    private func http1Answered(_ response: HTTPResponse, keepAlive: Bool) {
        h1Busy = false
        guard mode == .http1 else { return }
        writeHTTP1(response, keepAlive: keepAlive)
        pumpHTTP1()
    }

    /// The executor handler tasks prefer: this connection's loop, unless
    /// `PIXTRACK_HANDLERS_ON_LOOP=0` turned that off.
    private var handlerExecutor: EventLoop? { core.config.handlersOnEventLoop ? loop : nil }

    /// The task of a handler: begun at once on this loop and preferring it, or, with handlers
    /// kept off the loop, on the cooperative pool. Each task's closure is written out at its call
    /// site (`Task.immediate { … }`), never passed through a helper like this one used to be:
    /// a closure handed on to `Task` costs a reabstraction thunk and its context per request.

    /// Runs `work` now when called on this connection's loop (a task that ran there), else
    /// hands it over.
    func onLoop(_ work: @escaping @Sendable () -> Void) {
        if loop.inLoop { work() } else { loop.execute(work) }
    }

    /// The response's head and body, appended to `out` as bytes: no `String` is built for the
    /// head (each interpolated line used to allocate one).
    private func writeHTTP1(_ r: HTTPResponse, keepAlive: Bool) {
        out.reserveCapacity(out.count + 256 + r.body.count)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        out.append(contentsOf: String(r.status).utf8)  // a small string: no allocation
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: HTTPResponse.reason(r.status).utf8)
        out.append(contentsOf: "\r\n".utf8)
        for (n, v) in r.headers where n != "content-length" && n != "connection" {
            out.append(contentsOf: n.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: v.utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "content-length: ".utf8)
        out.append(contentsOf: String(r.body.count).utf8)
        out.append(contentsOf: keepAlive ? "\r\n\r\n".utf8 : "\r\nconnection: close\r\n\r\n".utf8)
        out.append(contentsOf: r.body)
        if !keepAlive { closeAfterWrite = true }
        writeOut()
    }

    /// Once a second: slow or idle peers are let go.
    func tick(now: ContinuousClock.Instant) {
        loop.assertInLoop()
        let limits = core.config.timeouts
        switch mode {
        case .sniffing:
            if now - created > limits.headerRead { close(reason: "preface_timeout") }
        case .http1:
            guard let h1, !closeAfterWrite else { return }
            if let started = h1.messageStarted {
                let limit = h1.headersDone ? limits.bodyRead : limits.headerRead
                if now - started > limit, !h1Busy, h1Queue.isEmpty {
                    writeHTTP1(.jsonError(408, code: "deadline_exceeded", message: h1.headersDone ? "request body not received in time" : "request headers not received in time"), keepAlive: false)
                }
            } else if !h1Busy, h1Queue.isEmpty, now - lastActivity > limits.idle {
                close(reason: "idle")
            }
        case .http2:
            // Slow headers: a stream begun but without END_HEADERS after the header timeout
            // (a client dribbling header bytes) ends the connection.
            if streams.values.contains(where: { $0.machine.isAwaitingHeaders && now - $0.started > limits.headerRead }) {
                core.counters.closedHeaderTimeout.add(1, ordering: .relaxed)
                goAwayAndClose(reason: "header_timeout", error: NGHTTP2_ENHANCE_YOUR_CALM)
            } else if let since = idleSince, now - since > limits.idle {
                core.counters.closedIdle.add(1, ordering: .relaxed)
                goAwayAndClose(reason: "idle", error: NGHTTP2_NO_ERROR)
            } else if idleSince == nil, now - lastActivity > limits.keepalive, let session {
                // Long calls (watch streams): PING a quiet peer so proxies keep the connection
                // and a vanished one is noticed; nothing read for another interval closes it.
                if let sent = pingSentAt {
                    if now - sent > limits.keepalive { goAwayAndClose(reason: "keepalive_timeout", error: NGHTTP2_NO_ERROR) }
                } else {
                    _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
                    pingSentAt = now
                    scheduleFlush()
                }
            }
        case .closed:
            break
        }
    }

    /// GOAWAY with `error`, flushed as far as the socket takes it, then the connection is closed.
    private func goAwayAndClose(reason: String, error: nghttp2_error_code) {
        if let session {
            let last = nghttp2_session_get_last_proc_stream_id(session)
            _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, UInt32(error.rawValue), nil, 0)
            var p: UnsafePointer<UInt8>?
            while unsent < core.config.maxOutboundBuffer {
                let n = nghttp2_session_mem_send(session, &p)
                if n <= 0 { break }
                out.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
            }
            // One attempt: a peer that does not read gets no more of our time.
            sendOnce()
        }
        close(reason: reason)
    }

    // MARK: graceful shutdown

    /// GOAWAY: announce shutdown now, refuse new streams shortly after; open calls finish.
    func beginDrain() {
        loop.assertInLoop()
        draining = true
        switch mode {
        case .sniffing: close(reason: "shutdown")
        case .http1: if !h1Busy && h1Queue.isEmpty && h1?.inMessage != true { close(reason: "shutdown") }
        case .closed: break
        case .http2:
            guard let session else { return }
            _ = nghttp2_submit_shutdown_notice(session)
            scheduleFlush()
            let loop = self.loop
            Task { [self] in
                try? await Task.sleep(for: .milliseconds(200))
                loop.execute { [self] in self.finalGoaway() }
            }
        }
    }

    private func finalGoaway() {
        guard mode == .http2, let session else { return }
        let last = nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
        scheduleFlush()
    }

    // MARK: stream events (from the nghttp2 callbacks)
    //
    // Each one tells the stream's state machine what happened and performs what it answers.

    func beginStream(_ id: Int32) {
        let s = H2Stream(id: id, messageLimit: core.config.maxMessageBytes)
        streams[id] = s
        recent = s
        idleSince = nil
    }

    func header(stream id: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        guard let s = lookup(id) else { return }
        s.head.headerBytes += name.count + value.count + 32
        if s.head.headerBytes > core.config.maxHeaderListBytes { s.head.tooLarge = true; return }
        // Matched as bytes: this runs for every header of every call. nghttp2 has already
        // checked that names are lowercase tokens and values carry no NUL/CR/LF.
        func text(_ b: UnsafeBufferPointer<UInt8>) -> String { String(decoding: b, as: UTF8.self) }
        // Pseudo-headers come first: by the first regular header we know whether this may be an
        // HTTP route (not POST, or a path no RPC has), and only then is every header kept.
        if name.first != UInt8(ascii: ":"), s.head.rawHeaders != nil || !s.head.isPOST || s.head.route == nil {
            if s.head.rawHeaders == nil { s.head.rawHeaders = [] }
            s.head.rawHeaders!.append((text(name), text(value)))
        }
        if name.first == UInt8(ascii: ":") {
            if name.equals(":authority") {
                // Only an HTTP route reads it: a POST already known to be an RPC skips the copy.
                if !s.head.isPOST || s.head.route == nil { s.head.authority = text(value) }
                return
            }
            if name.equals(":method") {
                s.head.isPOST = value.equals("POST")
                if !s.head.isPOST { s.head.method = text(value) }
            } else if name.equals(":path") {
                // A known method is found on the bytes and its path string shared, not rebuilt.
                s.head.route = core.dispatcher.router.method(path: value)
                s.head.path = s.head.route?.path ?? text(value)
                if s.head.route == nil { s.head.target = s.head.path }
            }
            return
        }
        if name.equals("content-type") {
            // The common case is decided on the bytes; the text is kept only for error messages.
            s.head.contentTypeIsGRPC = CallDispatcher.isGRPCContentType(value)
            if !s.head.contentTypeIsGRPC { s.head.contentType = text(value) }
            return
        }
        if name.equals("te") || name.equals("grpc-accept-encoding") || name.equals("user-agent") { return }
        if name.equals("grpc-timeout") { s.head.timeout = text(value); return }
        if name.equals("grpc-encoding") { s.head.encoding = text(value); return }
        if name.equals("authorization") {
            // Kept apart from metadata so handlers (and their logs) never see the token.
            s.head.authorization = Array(value)
            return
        }
        let key = text(name)
        if !key.hasSuffix("-bin"), !value.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) {
            s.head.invalidMetadataKey = s.head.invalidMetadataKey ?? key
            return
        }
        let v = text(value)
        if key == "x-request-id" { s.head.requestID = String(v.prefix(64)) }
        s.head.metadata.add(lowercasedKey: key, v)
    }

    func headersComplete(stream id: Int32) {
        guard let s = lookup(id) else { return }
        switch s.machine.headersEnded(&s.head, rules: rules, knowsService: { self.core.dispatcher.router.knows(service: $0) }) {
        case .none:
            break
        case .refuse(let status):
            answer(s, .trailersOnly(status))
        case .routeHTTP:
            if s.head.rawHeaders == nil { s.head.rawHeaders = CallDispatcher.rebuiltHeaders(s.head) }
        case .accept(let call):
            guard let method = s.head.route else { return }
            if let limit = call.messageLimit { s.deframer.limit = min(s.deframer.limit, limit) }
            let requestID = s.head.requestID ?? BearerToken.newRequestID()
            s.head.requestID = requestID
            s.rpc = method
            s.context = RPCContext(path: s.head.path, metadata: s.head.metadata, deadline: call.timeout.map { s.started + $0 },
                                   requestID: requestID, peer: peer)
            core.counters.inFlight.add(1, ordering: .relaxed)
            // The timer starts after this read, and only if the call is still open then: calls
            // answered in the same read (health checks from clients that always send
            // `grpc-timeout`) never pay for one.
            if call.timeout != nil { deadlinePending.append(s) }
            if case .bidiStreaming(let handler) = method.kind { core.dispatcher.startStreaming(handler, s, on: self) }
        }
    }

    /// DATA for a stream. Bytes are held against the connection's and the process's budgets
    /// and given back to the peer's window when consumed: at once for unary calls (the message
    /// is bounded by the size limit and the budgets), as the handler takes each message for
    /// streaming calls. Data that would pass a budget fails its stream with RESOURCE_EXHAUSTED.
    func data(stream id: Int32, _ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard let s = lookup(id) else {
            consume(id, n)  // not ours to keep (unknown): dropped
            return
        }
        let streaming: Bool
        switch s.machine.dataArrived() {
        case .drop:
            // Answered or refused: what the client still sends is consumed and dropped; a
            // well-behaved client stops at the trailers.
            return consume(id, n)
        case .httpBody:
            return httpData(s, bytes)
        case .unaryMessage: streaming = false
        case .streamingMessage: streaming = true
        }
        if let over = hold(s, n) {
            consume(id, n)
            return answer(s, s.machine.end(.init(.resourceExhausted, "request data would exceed \(over); retry later")))
        }
        if streaming { s.unconsumed += n } else { consume(id, n) }
        // A unary call keeps its first message only: the machine ends the call on a second.
        var unary = 0
        do {
            try s.deframer.append(bytes) { m in
                if streaming {
                    s.inbound?.yield(m)
                } else {
                    if unary == 0 && s.requestMessage == nil { s.requestMessage = m }
                    unary += 1
                }
            }
        } catch {
            return answer(s, s.machine.framingFailed(error, encoding: s.head.encoding))
        }
        if unary > 0 { answer(s, s.machine.unaryMessages(unary)) }
    }

    /// Counts `n` more bytes held by `s` against the connection's and the process's budgets;
    /// when that would pass one, counts nothing and names the budget.
    private func hold(_ s: H2Stream, _ n: Int) -> String? {
        let cfg = core.config
        if held + n > cfg.maxConnectionBufferBytes || core.counters.bufferedBytes.load(ordering: .relaxed) + n > cfg.maxBufferBytes {
            core.counters.budgetRefusals.add(1, ordering: .relaxed)
            return held + n > cfg.maxConnectionBufferBytes
                ? "this connection's \(cfg.maxConnectionBufferBytes)-byte request buffer" : "the server's request buffer"
        }
        s.held += n
        held += n
        core.counters.bufferedBytes.add(n, ordering: .relaxed)
        return nil
    }

    /// Gives up to `n` of the bytes `s` holds back to the budgets.
    private func unhold(_ s: H2Stream, _ n: Int) {
        let r = min(n, s.held)
        guard r > 0 else { return }
        s.held -= r
        held -= r
        core.counters.bufferedBytes.subtract(r, ordering: .relaxed)
    }

    /// DATA of an HTTP route's request: buffered (bounded like HTTP/1.1 bodies and the budgets).
    private func httpData(_ s: H2Stream, _ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        consume(s.id, n)
        let cfg = core.config
        if s.httpBody.count + n > cfg.http1Limits.maxBodyBytes {
            return respondHTTP(s, .jsonError(413, code: "resource_exhausted", message: "request body exceeds \(cfg.http1Limits.maxBodyBytes) bytes"))
        }
        if let over = hold(s, n) {
            return respondHTTP(s, .jsonError(503, code: "resource_exhausted", message: "request data would exceed \(over); retry later"))
        }
        s.httpBody.append(contentsOf: bytes)
    }

    /// The request of an HTTP route is complete: its handler runs in a task, like HTTP/1.1's.
    private func runHTTP(_ s: H2Stream) {
        guard let handler = isPublic ? core.publicHTTPHandler : core.httpHandler else {
            return respondHTTP(s, .jsonError(404, code: "not_found", message: "no HTTP routes"))
        }
        var headers = s.head.rawHeaders ?? []
        if !s.head.authority.isEmpty, !headers.contains(where: { $0.name == "host" }) { headers.insert(("host", s.head.authority), at: 0) }
        let request = HTTPRequest(method: s.head.isPOST ? "POST" : s.head.method, target: s.head.target.isEmpty ? s.head.path : s.head.target,
                                  headers: headers, body: s.httpBody, peer: peer)
        s.httpBody = []
        let id = s.id
        s.task = handlerExecutor != nil
            ? Task.immediate(executorPreference: loop) { [self] in await runHTTP2Route(handler, request, stream: id) }
            : Task { [self] in await runHTTP2Route(handler, request, stream: id) }
    }

    /// An HTTP/2 route's task: the handler, then its answer on its stream (if still open).
    private func runHTTP2Route(_ handler: HTTPHandler, _ request: HTTPRequest, stream id: Int32) async {
        let response = await handler(request)
        onLoop { [self] in
            guard let st = stream(id) else { return }
            respondHTTP(st, response)
        }
    }

    /// An HTTP route's answer on its stream: `:status`, the headers (connection-specific ones
    /// dropped, names lowercased), the body as DATA ending the stream.
    func respondHTTP(_ s: H2Stream, _ r: HTTPResponse) {
        loop.assertInLoop()
        guard let session else { return }
        let head = s.head.method == "HEAD"
        guard s.machine.httpResponded(hasBody: !(head || r.body.isEmpty)) else { return }
        s.task?.cancel()
        releaseBuffers(s)
        var h: [(String, String)] = [(":status", String(r.status))]
        for (n, v) in r.headers where !Self.notForwardedOverHTTP2.contains(n.lowercased()) { h.append((n.lowercased(), v)) }
        h.append(("content-length", String(r.body.count)))
        if head || r.body.isEmpty {
            _ = withHeaderList(h) { nghttp2_submit_response(session, s.id, $0, $1, nil) }
        } else {
            s.setBody(r.body)
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: h2ReadResponse)
            _ = withHeaderList(h) { nghttp2_submit_response(session, s.id, $0, $1, &provider) }
        }
        core.dispatcher.httpCallEnded(s, status: r.status, on: self)
        scheduleFlush()
    }

    /// Connection-specific HTTP/1.1 headers HTTP/2 forbids (and content-length, which we set).
    private static let notForwardedOverHTTP2: Set<String> = ["connection", "keep-alive", "transfer-encoding", "upgrade",
                                                              "proxy-connection", "content-length"]

    /// Gives `n` bytes of stream `id` back to the peer's flow-control windows.
    private func consume(_ id: Int32, _ n: Int) {
        guard n > 0, let session else { return }
        _ = nghttp2_session_consume(session, id, n)
        scheduleFlush()
    }

    /// A streaming handler took a message of `bytes` wire bytes (prefix included).
    func messageTaken(stream id: Int32, bytes: Int) {
        loop.assertInLoop()
        guard let s = streams[id] else { return }
        let k = min(bytes, s.unconsumed)
        s.unconsumed -= k
        consume(id, k)
        unhold(s, bytes)
    }

    /// The call is over: what the stream held goes back to the budgets and the peer's window.
    private func releaseBuffers(_ s: H2Stream) {
        if s.unconsumed > 0 { consume(s.id, s.unconsumed); s.unconsumed = 0 }
        // The memory too, not only the count: a refused stream may stay open (half-closed)
        // for as long as its client likes.
        if s.deframer.pendingBytes > 0 { s.deframer = GRPCDeframer(limit: s.deframer.limit) }
        s.requestMessage = nil
        unhold(s, s.held)
        if let k = s.writeWaiter {
            s.writeWaiter = nil
            k.resume(throwing: CancellationError())
        }
    }

    func requestEnded(stream id: Int32) {
        guard let s = lookup(id) else { return }
        switch s.machine.requestEnded(pendingBytes: s.deframer.pendingBytes) {
        case .none:
            break
        case .runHTTP:
            runHTTP(s)
        case .finishRequests:
            s.inbound?.finish()
        case .runUnary(let inline):
            guard let method = s.rpc, let context = s.context, let request = s.requestMessage else { return }
            s.requestMessage = nil
            if inline, case .unaryInline(let handler) = method.kind {
                core.dispatcher.runInline(handler, request, context, s, on: self)
            } else if let handler = method.kind.unaryHandler {
                core.dispatcher.runUnary(handler, request, context, stream: s, on: self, onEventLoop: method.runsOnEventLoop && handlerExecutor != nil)
            }
        case .answer(let a):
            answer(s, a)
        }
    }

    func streamClosed(_ id: Int32, errorCode: UInt32) {
        if recent?.id == id { recent = nil }
        guard let s = streams.removeValue(forKey: id) else { return }
        if streams.isEmpty { idleSince = .now }
        defer { releaseBuffers(s) }
        if case .cancelled(let inFlight) = s.machine.streamClosed() {
            // The client reset the stream (cancelled) before we answered.
            s.task?.cancel()
            s.deadlineTask?.cancel()
            if inFlight { core.counters.inFlight.subtract(1, ordering: .relaxed) }
            core.dispatcher.logCall(s, code: .cancelled, note: "stream reset by peer (h2 error \(errorCode))", on: self)
        }
        s.inbound?.finish()
    }

    func stream(_ id: Int32) -> H2Stream? {
        loop.assertInLoop()
        return lookup(id)
    }

    private func armPendingDeadlines() {
        guard !deadlinePending.isEmpty else { return }
        for s in deadlinePending where !s.machine.isAnswered && s.deadlineTask == nil && mode != .closed {
            if let deadline = s.context?.deadline { s.deadlineTask = core.dispatcher.armDeadline(deadline, stream: s.id, on: self) }
        }
        deadlinePending.removeAll(keepingCapacity: true)
    }

    /// Callbacks for one frame arrive back to back for the same stream: a one-entry cache in
    /// front of the dictionary saves a hash lookup per header.
    @inline(__always)
    private func lookup(_ id: Int32) -> H2Stream? {
        if let r = recent, r.id == id { return r }
        let s = streams[id]
        recent = s
        return s
    }

    // MARK: responses

    /// Performs a final status the stream's machine decided: Trailers-Only, or trailers after
    /// the queued messages. Either way the call is over: metrics, its task, its buffers.
    private func answer(_ s: H2Stream, _ a: GRPCStreamStateMachine.Answer) {
        guard let session else { return }
        switch a {
        case .none:
            return
        case .trailersOnly(let status):
            var h: [(String, String)] = [(":status", String(status.httpStatus)), ("content-type", "application/grpc"),
                                         ("grpc-status", String(status.code.rawValue))]
            if !status.message.isEmpty { h.append(("grpc-message", GRPCWire.percentEncode(status.message))) }
            if status.advertiseIdentity { h.append(("grpc-accept-encoding", "identity")) }
            _ = withHeaderList(h) { nghttp2_submit_response(session, s.id, $0, $1, nil) }
            core.dispatcher.callEnded(s, code: status.code, on: self)
            s.task?.cancel()
            s.inbound?.finish()
            releaseBuffers(s)
        case .trailers(let code, let resume):
            core.dispatcher.callEnded(s, code: code, on: self)
            s.task?.cancel()
            s.inbound?.finish()
            releaseBuffers(s)
            if resume { _ = nghttp2_session_resume_data(session, s.id) }
        }
        scheduleFlush()
    }

    /// Queues one response message (the response headers first if it is the first); false when
    /// the call is already answered and the message was dropped.
    @discardableResult
    func sendMessage(_ s: H2Stream, _ message: [UInt8]) -> Bool {
        loop.assertInLoop()
        guard let session else { return false }
        switch s.machine.handlerSent() {
        case .drop:
            return false
        case .startResponse:
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: h2ReadResponse)
            _ = nghttp2_submit_response(session, s.id, StaticHeaders.responseStart.pointer, StaticHeaders.responseStart.count, &provider)
            s.queueMessage(message)
        case .queue(let resume):
            s.queueMessage(message)
            if resume { _ = nghttp2_session_resume_data(session, s.id) }
        }
        scheduleFlush()
        return true
    }

    /// A unary handler's answer: its message and OK, or its error's status.
    func handlerAnswered(stream id: Int32, _ result: Result<[UInt8], RPCError>) {
        guard let s = stream(id) else { return }
        switch result {
        case .success(let message):
            sendMessage(s, message)
            finish(s, code: .ok, message: "")
        case .failure(let e):
            finish(s, code: e.code, message: e.message)
        }
    }

    /// Ends a call with its handler's status: trailers after its messages, or Trailers-Only
    /// when none was sent.
    func finish(_ s: H2Stream, code: RPCCode, message: String) {
        loop.assertInLoop()
        answer(s, s.machine.handlerFinished(code, message))
    }

    /// The deadline timer of stream `id` fired.
    func deadlineExpired(stream id: Int32) {
        loop.assertInLoop()
        guard let s = lookup(id) else { return }
        answer(s, s.machine.deadlineExpired())
    }

    /// The data source of every response: queued bytes, then (gRPC) trailers.
    func readResponse(stream id: Int32, into buf: UnsafeMutableRawBufferPointer, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let s = lookup(id), let session else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        let n = s.takeOutbound(into: buf)
        if n > 0 {
            if let k = s.writeWaiter, s.pendingOutbound <= core.config.streamWriteHighWater {
                s.writeWaiter = nil
                k.resume()
            }
        }
        switch s.machine.pulled(copied: n, pending: s.pendingOutbound) {
        case .data:
            return n
        case .deferred:
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        case .endStream:
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            return n
        case .trailers(let code, let message):
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            if code == .ok && message.isEmpty {
                _ = nghttp2_submit_trailer(session, id, StaticHeaders.trailersOK.pointer, StaticHeaders.trailersOK.count)
            } else {
                var h: [(String, String)] = [("grpc-status", String(code.rawValue))]
                if !message.isEmpty { h.append(("grpc-message", GRPCWire.percentEncode(message))) }
                _ = withHeaderList(h) { nghttp2_submit_trailer(session, id, $0, $1) }
            }
            return n
        case .fail:
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Byte-wise equality with an ASCII literal, without building a String.
    @inline(__always)
    func equals(_ literal: StaticString) -> Bool {
        count == literal.utf8CodeUnitCount && (count == 0 || memcmp(baseAddress!, literal.utf8Start, count) == 0)
    }
}
