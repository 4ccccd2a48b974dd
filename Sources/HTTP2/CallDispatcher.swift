import RPC

/// gRPC call semantics on top of HTTP/2 streams: header validation, auth, deadlines, message
/// framing limits, running handlers off the loop (all but `unaryInline` ones, answered in
/// place) and handing their results back to it.
/// Every method runs on the connection's loop thread.
final class CallDispatcher: Sendable {
    let router: RPCRouter
    let config: HTTP2Server.Configuration
    let logger: Logger
    let counters: ServerCounters
    /// Call metrics by `RPCMethod.routeIndex`, resolved once: recording a call is a few atomic adds.
    private let series: [CallSeries]
    private let unknownSeries: CallSeries

    init(router: RPCRouter, config: HTTP2Server.Configuration, logger: Logger, counters: ServerCounters, metrics: Metrics) {
        self.router = router
        self.config = config
        self.logger = logger
        self.counters = counters
        series = router.methodsByRouteIndex.map { metrics.calls(method: $0.path, transport: "grpc") }
        unknownSeries = metrics.calls(method: "unknown", transport: "grpc")
    }

    func headersComplete(_ s: H2Stream, on c: H2Connection) {
        if s.headersTooLarge {
            return c.respondTrailersOnly(s, httpStatus: 431, code: .resourceExhausted,
                                         message: "request headers exceed \(config.maxHeaderListBytes) bytes")
        }
        // Not gRPC (another method or content-type): an HTTP route, the same handlers as
        // HTTP/1.1 (browsers and gateways speak h2 once TLS is in front). It runs at END_STREAM.
        if !(s.isPOST && s.contentTypeIsGRPC), c.servesHTTPRoutes {
            if s.rawHeaders == nil { s.rawHeaders = Self.rebuiltHeaders(s) }
            s.isHTTP = true
            return
        }
        if c.isPublic {
            return c.respondTrailersOnly(s, httpStatus: 404, code: .unimplemented,
                                         message: "RPCs are not served on the public port; use the main port")
        }
        guard s.isPOST else {
            return c.respondTrailersOnly(s, httpStatus: 405, code: .unimplemented, message: "gRPC requires POST, got \(s.method)")
        }
        guard s.contentTypeIsGRPC else {
            return c.respondTrailersOnly(s, httpStatus: 415, code: .internal,
                                         message: "content-type must be application/grpc, got \(s.contentType.isEmpty ? "none" : s.contentType)")
        }
        guard let method = s.route else {
            let service = String(s.path.dropFirst().prefix { $0 != "/" })
            return c.respondTrailersOnly(s, code: .unimplemented,
                                         message: router.knows(service: service) ? "method \(s.path) is not implemented" : "unknown service \(service)")
        }
        if let key = s.invalidMetadataKey {
            return c.respondTrailersOnly(s, code: .invalidArgument,
                                         message: "metadata \(key) is not printable ASCII (binary values need a -bin key)")
        }
        if method.requiresAuth, let token = config.authToken, !BearerToken.matches(s.authorization, token: token) {
            return c.respondTrailersOnly(s, code: .unauthenticated, message: "missing or invalid bearer token")
        }
        var deadline: ContinuousClock.Instant?
        if let t = s.timeout {
            guard let d = GRPCWire.parseTimeout(t) else {
                return c.respondTrailersOnly(s, code: .internal, message: "malformed grpc-timeout")
            }
            deadline = s.started + d
        }
        // Anyone may call a method that needs no token: its messages get the small limit.
        if !method.requiresAuth { s.deframer.limit = min(s.deframer.limit, config.maxUnauthenticatedMessageBytes) }
        let requestID = s.requestID ?? BearerToken.newRequestID()
        s.requestID = requestID
        s.rpc = method
        s.context = RPCContext(path: s.path, metadata: s.metadata, deadline: deadline, requestID: requestID, peer: c.peer)
        counters.inFlight.add(1, ordering: .relaxed)
        if deadline != nil { c.deadlineAfterThisRead(s) }
        if case .bidiStreaming(let handler) = method.kind { startStreaming(handler, s, on: c) }
    }

    func data(_ s: H2Stream, _ bytes: UnsafeRawBufferPointer, on c: H2Connection) {
        guard let method = s.rpc else { return }
        let messages: [[UInt8]]
        do {
            messages = try s.deframer.append(bytes)
        } catch .tooLarge(let announced, let limit) {
            return c.respondTrailersOnly(s, code: .resourceExhausted,
                                         message: "request message of \(announced) bytes exceeds the limit of \(limit) bytes")
        } catch .compressed {
            if s.encoding == "identity" || s.encoding.isEmpty {
                return c.respondTrailersOnly(s, code: .internal, message: "compressed message without grpc-encoding")
            }
            return c.respondTrailersOnly(s, code: .unimplemented, message: "grpc-encoding \(s.encoding) is not supported",
                                         extra: [("grpc-accept-encoding", "identity")])
        } catch {
            return c.respondTrailersOnly(s, code: .internal, message: "invalid message framing")
        }
        switch method.kind {
        case .unary, .unaryInline:
            if s.requestMessages.isEmpty { s.requestMessages = messages } else { s.requestMessages += messages }
            if s.requestMessages.count > 1 {
                c.respondTrailersOnly(s, code: .internal, message: "unary call received more than one request message")
            }
        case .bidiStreaming:
            for m in messages { s.inbound?.yield(m) }
        }
    }

    func requestEnded(_ s: H2Stream, on c: H2Connection) {
        guard let method = s.rpc else { return }
        if s.deframer.pendingBytes > 0 {
            return c.respondTrailersOnly(s, code: .internal, message: "request ended inside a message (length prefix larger than the body)")
        }
        switch method.kind {
        case .bidiStreaming:
            s.inbound?.finish()
        case .unaryInline(let handler):
            guard let (request, context) = unaryRequest(s, on: c) else { return }
            do {
                c.sendMessage(s, try handler(request, context))
                c.finish(s, code: .ok, message: "")
            } catch {
                let e = RPCError(mapping: error)
                Self.logUnexpected(error, context: context, logger: logger)
                c.finish(s, code: e.code, message: e.message)
            }
        case .unary(let handler):
            guard let (request, context) = unaryRequest(s, on: c) else { return }
            let id = s.id
            let logger = self.logger
            s.task = Task {
                let result: Result<[UInt8], RPCError>
                do {
                    result = .success(try await handler(request, context))
                } catch {
                    result = .failure(RPCError(mapping: error))
                    Self.logUnexpected(error, context: context, logger: logger)
                }
                c.loop.execute {
                    guard let st = c.stream(id) else { return }
                    switch result {
                    case .success(let bytes):
                        c.sendMessage(st, bytes)
                        c.finish(st, code: .ok, message: "")
                    case .failure(let e):
                        c.finish(st, code: e.code, message: e.message)
                    }
                }
            }
        }
    }

    /// The one request message of a unary call, taken from the stream; else answers INTERNAL.
    private func unaryRequest(_ s: H2Stream, on c: H2Connection) -> ([UInt8], RPCContext)? {
        guard s.requestMessages.count == 1, let context = s.context else {
            c.respondTrailersOnly(s, code: .internal,
                                  message: "unary call needs exactly one request message, got \(s.requestMessages.count)")
            return nil
        }
        defer { s.requestMessages = [] }
        return (s.requestMessages[0], context)
    }

    private func startStreaming(_ handler: @escaping BidiStreamingHandler, _ s: H2Stream, on c: H2Connection) {
        guard let context = s.context else { return }
        let (raw, continuation) = AsyncStream.makeStream(of: [UInt8].self)
        s.inbound = continuation
        let id = s.id
        let logger = self.logger
        // Each message the handler takes gives its bytes back to the peer's window: a client
        // can be only one stream window ahead of the handler.
        let source = InboundSource(raw)
        let requests = AsyncStream<[UInt8]>(unfolding: {
            guard let m = await source.next() else { return nil }
            c.loop.execute { c.messageTaken(stream: id, bytes: m.count + 5) }
            return m
        })
        // `send` returns once the message is queued and the stream's backlog is under the high
        // water mark; for a client that does not read, it waits (never an unbounded queue).
        let highWater = config.streamWriteHighWater
        let writer = RPCResponseWriter { bytes in
            try Task.checkCancellation()
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
                c.loop.execute {
                    guard let st = c.stream(id), !st.answered else { return k.resume(throwing: CancellationError()) }
                    c.sendMessage(st, bytes)
                    if st.pendingOutbound <= highWater { k.resume() } else { st.writeWaiter = k }
                }
            }
        }
        s.task = Task {
            let final: RPCError
            do {
                try await handler(requests, writer, context)
                final = RPCError(.ok, "")
            } catch {
                final = RPCError(mapping: error)
                Self.logUnexpected(error, context: context, logger: logger)
            }
            c.loop.execute { if let st = c.stream(id) { c.finish(st, code: final.code, message: final.message) } }
        }
    }

    /// Starts the timer that ends the call with DEADLINE_EXCEEDED unless it was answered before.
    func armDeadline(_ deadline: ContinuousClock.Instant, stream id: Int32, on c: H2Connection) {
        let task = Task {
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            c.loop.execute {
                guard let st = c.stream(id), !st.answered else { return }
                c.finish(st, code: .deadlineExceeded, message: "deadline exceeded")
            }
        }
        c.stream(id)?.deadlineTask = task
    }

    /// The headers of a POST on an RPC path that turned out not to be gRPC (a Connect call), from
    /// what the gRPC parser kept: they were not copied as they arrived, to spare every gRPC call.
    static func rebuiltHeaders(_ s: H2Stream) -> [(name: String, value: String)] {
        var h: [(name: String, value: String)] = []
        if !s.contentType.isEmpty { h.append(("content-type", s.contentType)) }
        if let a = s.authorization { h.append(("authorization", String(decoding: a, as: UTF8.self))) }
        if let t = s.timeout { h.append(("grpc-timeout", t)) }
        for (k, v) in s.metadata { h.append((k, v)) }
        return h
    }

    /// An HTTP route answered on an HTTP/2 stream: logged (failed or slow ones at info).
    func httpCallEnded(_ s: H2Stream, status: Int, on c: H2Connection) {
        let elapsed = ContinuousClock.now - s.started
        let level: Logger.Level = status < 500 && elapsed < .seconds(1) ? .debug : .info
        guard logger.minimum <= level else { return }
        logger.log(level, "http2_request", [("method", s.isPOST ? "POST" : s.method), ("path", s.path), ("status", String(status)),
                                            ("duration_ms", String(Double(elapsed / .microseconds(1)) / 1000)), ("peer", c.peer)])
    }

    /// Called once per stream when its final status is decided.
    func callEnded(_ s: H2Stream, code: RPCCode, on c: H2Connection) {
        s.deadlineTask?.cancel()
        if s.rpc != nil { counters.inFlight.subtract(1, ordering: .relaxed) }
        let now = ContinuousClock.now
        logCall(s, code: code, note: nil, now: now, on: c)
        let seconds = Double((now - s.started) / .microseconds(1)) / 1e6
        (s.rpc.map { series[$0.routeIndex] } ?? unknownSeries).record(code, seconds: seconds)
    }

    func logCall(_ s: H2Stream, code: RPCCode, note: String?, now: ContinuousClock.Instant = .now, on c: H2Connection) {
        counters.calls.add(1, ordering: .relaxed)
        // Failed and slow calls are logged at info; routine successes only at debug (the
        // counters carry them), so a busy server does not spend a syscall per call on logs.
        let elapsed = now - s.started
        let level: Logger.Level = (code == .ok && elapsed < .seconds(1)) ? .debug : .info
        guard logger.minimum <= level else { return }
        let ms = Double(elapsed / .microseconds(1)) / 1000
        var fields: [(String, String)] = [
            ("method", s.path.isEmpty ? "-" : s.path), ("code", code.name),
            ("duration_ms", String(ms)), ("request_id", s.requestID ?? "-"), ("peer", c.peer),
        ]
        if let note { fields.append(("note", note)) }
        logger.log(level, "rpc", fields)
    }

    private static func logUnexpected(_ error: any Error, context: RPCContext, logger: Logger) {
        if let e = error as? RPCError {
            if let cause = e.cause { logger.warning("rpc_error_cause", ("request_id", context.requestID), ("cause", String(describing: cause))) }
        } else if error is any RPCErrorConvertible {
            logger.warning("rpc_error_cause", ("request_id", context.requestID), ("cause", String(describing: error)))
        } else if !(error is CancellationError) {
            logger.error("rpc_internal_error", ("request_id", context.requestID), ("method", context.path), ("error", String(describing: error)))
        }
    }

    static func isGRPCContentType(_ ct: String) -> Bool {
        var bytes = Array(ct.utf8)
        return bytes.withUnsafeMutableBufferPointer { isGRPCContentType(UnsafeBufferPointer($0)) }
    }

    /// `application/grpc` or `application/grpc+proto`, any case, optionally followed by `;` parameters.
    static func isGRPCContentType(_ value: UnsafeBufferPointer<UInt8>) -> Bool {
        if value.equals("application/grpc") { return true }  // what every client sends
        let end = value.firstIndex(of: UInt8(ascii: ";")) ?? value.count
        var base = value[..<end].map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
        while base.last == UInt8(ascii: " ") { base.removeLast() }
        return base.elementsEqual("application/grpc".utf8) || base.elementsEqual("application/grpc+proto".utf8)
    }

}

/// The one consumer of a streaming call's raw inbound messages (the handler's iterator).
private final class InboundSource: @unchecked Sendable {
    // Only ever advanced by the handler's single `for await` loop, one `next()` at a time.
    private var iterator: AsyncStream<[UInt8]>.Iterator

    init(_ stream: AsyncStream<[UInt8]>) { iterator = stream.makeAsyncIterator() }

    func next() async -> [UInt8]? { await iterator.next() }
}
