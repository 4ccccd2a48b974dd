import RPC

/// Runs the handlers of gRPC calls for the connections: off the loop in tasks (all but
/// `unaryInline` ones, answered in place), their results handed back with `loop.execute`;
/// deadline timers; call logs and metrics. What a call may do next is decided by its stream's
/// `GRPCStreamStateMachine`, driven by `H2Connection`.
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

    /// Runs a unary call's `unaryInline` handler right here on the loop and answers it.
    func runInline(_ handler: InlineUnaryHandler, _ request: [UInt8], _ context: RPCContext, _ s: H2Stream, on c: H2Connection) {
        let result: Result<[UInt8], RPCError>
        do {
            result = .success(try handler(request, context))
        } catch {
            result = .failure(RPCError(mapping: error))
            Self.logUnexpected(error, context: context, logger: logger)
        }
        c.handlerAnswered(stream: s.id, result)
    }

    /// Runs a unary call's handler in a task; its answer comes back to the loop. A method that
    /// never blocks (`RPCMethod.runsOnEventLoop`) runs its task on the connection's loop, which
    /// then writes the answer without a hop; the others run on the cooperative pool.
    func runUnary(_ handler: @escaping UnaryHandler, _ request: [UInt8], _ context: RPCContext, stream s: H2Stream, on c: H2Connection,
                  onEventLoop: Bool = false) {
        let id = s.id
        let logger = self.logger
        // Each task's closure is written out here, not passed through a helper: handing a
        // closure on to `Task` costs a reabstraction thunk and its context on every call.
        if onEventLoop {
            let loop = c.loop
            s.task = loop.inLoop
                ? Task.immediate(executorPreference: loop) { await Self.call(handler, request, context, stream: id, on: c, logger: logger) }
                : Task(executorPreference: loop) { await Self.call(handler, request, context, stream: id, on: c, logger: logger) }
        } else {
            s.task = Task { await Self.call(handler, request, context, stream: id, on: c, logger: logger) }
        }
    }

    /// A unary call's task: the handler, then its answer handed to the connection (checked here
    /// rather than through `onLoop`: on the loop, the usual case, no closure is made for it).
    private static func call(_ handler: UnaryHandler, _ request: [UInt8], _ context: RPCContext, stream id: Int32, on c: H2Connection,
                             logger: Logger) async {
        let result: Result<[UInt8], RPCError>
        do {
            result = .success(try await handler(request, context))
        } catch {
            result = .failure(RPCError(mapping: error))
            logUnexpected(error, context: context, logger: logger)
        }
        if c.loop.inLoop { c.handlerAnswered(stream: id, result) } else { c.loop.execute { c.handlerAnswered(stream: id, result) } }
    }

    /// Starts a streaming call's handler (at END_HEADERS): it reads request messages from an
    /// `AsyncStream` the connection feeds and answers through a writer.
    func startStreaming(_ handler: @escaping BidiStreamingHandler, _ s: H2Stream, on c: H2Connection) {
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
                    guard let st = c.stream(id), c.sendMessage(st, bytes) else { return k.resume(throwing: CancellationError()) }
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

    /// The timer that ends the call with DEADLINE_EXCEEDED unless it was answered before.
    func armDeadline(_ deadline: ContinuousClock.Instant, stream id: Int32, on c: H2Connection) -> Task<Void, Never> {
        Task {
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            c.loop.execute { c.deadlineExpired(stream: id) }
        }
    }

    /// The headers of a POST on an RPC path that turned out not to be gRPC (a Connect call), from
    /// what the gRPC parser kept: they were not copied as they arrived, to spare every gRPC call.
    static func rebuiltHeaders(_ s: RequestHead) -> [(name: String, value: String)] {
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
        logger.log(level, "http2_request", [("method", s.head.isPOST ? "POST" : s.head.method), ("path", s.head.path), ("status", String(status)),
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
            ("method", s.head.path.isEmpty ? "-" : s.head.path), ("code", code.name),
            ("duration_ms", String(ms)), ("request_id", s.head.requestID ?? "-"), ("peer", c.peer),
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
