import Testing
@testable import HTTP2
import RPC

/// The stream state machine fed event by event, no socket: every gRPC rule ARCHITECTURE.md
/// lists (Trailers-Only, deadlines, size limits, compression, cancel, RST_STREAM, the connection
/// going away), HTTP routes over HTTP/2, and events that arrive where they make no sense.
@Suite struct GRPCStreamStateMachineTests {
    typealias Machine = GRPCStreamStateMachine
    typealias Status = GRPCStreamStateMachine.FinalStatus

    static let echo = RPCMethod(service: "t.T", method: "Echo", kind: .unary { req, _ in req })
    static let inline = RPCMethod(service: "t.T", method: "Now", kind: .unaryInline { req, _ in req })
    static let open = RPCMethod(service: "t.T", method: "Open", requiresAuth: false, kind: .unary { req, _ in req })
    static let watch = RPCMethod(service: "t.T", method: "Watch", kind: .bidiStreaming { _, _, _ in })

    static let rules = Machine.Rules(isPublic: false, servesHTTPRoutes: true, authToken: nil,
                                     maxHeaderListBytes: 16 << 10, maxUnauthenticatedMessageBytes: 64 << 10)

    /// A well-formed gRPC request for `method`.
    static func grpc(_ method: RPCMethod?, path: String? = nil) -> RequestHead {
        var h = RequestHead()
        h.isPOST = true
        h.contentTypeIsGRPC = true
        h.route = method
        h.path = method?.path ?? path ?? "/"
        return h
    }

    static func headers(_ h: RequestHead, rules: Machine.Rules = rules, known: Set<String> = ["t.T"]) -> (Machine, Machine.HeadersAction) {
        var m = Machine()
        var h = h
        let action = m.headersEnded(&h, rules: rules, knowsService: { known.contains($0) })
        return (m, action)
    }

    /// A call accepted and past its headers, in `.receiving` (unary) or `.running` (streaming).
    static func accepted(_ method: RPCMethod) -> Machine {
        let (m, action) = headers(grpc(method))
        #expect(action == .accept(.init(kind: Machine.Kind(method.kind), timeout: nil, messageLimit: nil)))
        return m
    }

    /// A unary call whose one message arrived and whose handler runs.
    static func running(_ method: RPCMethod = echo) -> Machine {
        var m = accepted(method)
        #expect(m.dataArrived() == .unaryMessage)
        #expect(m.unaryMessages(1) == .none)
        #expect(m.requestEnded(pendingBytes: 0) == .runUnary(inline: method.path == inline.path))
        return m
    }

    // MARK: the whole call

    @Test func aUnaryCallFromHeadersToTrailers() {
        var m = Self.accepted(Self.echo)
        #expect(m.state == .receiving(.unary, messages: 0))
        #expect(m.isAwaitingHeaders == false)
        #expect(m.dataArrived() == .unaryMessage)
        #expect(m.unaryMessages(1) == .none)
        #expect(m.state == .receiving(.unary, messages: 1))
        #expect(m.requestEnded(pendingBytes: 0) == .runUnary(inline: false))
        #expect(m.state == .running(.unary, requestOpen: false))
        #expect(m.handlerSent() == .startResponse)
        #expect(m.handlerFinished(.ok, "") == .trailers(.ok, resume: false))
        #expect(m.isAnswered)
        // The data source drains the message in two pulls, then the trailers go with the last.
        #expect(m.pulled(copied: 16384, pending: 100) == .data)
        #expect(m.pulled(copied: 100, pending: 0) == .trailers(.ok, message: ""))
        #expect(m.state == .answered)
        #expect(m.streamClosed() == .none, "a call answered is not a cancelled one")
        #expect(m.state == .closed)
    }

    @Test func anInlineHandlerRunsAtEndOfStream() {
        var m = Self.accepted(Self.inline)
        #expect(m.unaryMessages(1) == .none)
        #expect(m.requestEnded(pendingBytes: 0) == .runUnary(inline: true))
    }

    @Test func theDataSourceDefersWhenDryAndIsResumedByTheNextMessage() {
        var m = Self.accepted(Self.watch)
        #expect(m.handlerSent() == .startResponse)
        #expect(m.pulled(copied: 20, pending: 0) == .data)
        #expect(m.pulled(copied: 0, pending: 0) == .deferred)
        #expect(m.state == .sending(.streaming, requestOpen: true, deferred: true))
        #expect(m.handlerSent() == .queue(resume: true))
        #expect(m.handlerSent() == .queue(resume: false), "resumed once")
        #expect(m.pulled(copied: 40, pending: 0) == .data)
        #expect(m.pulled(copied: 0, pending: 0) == .deferred)
        // The status while deferred resumes the source, which then emits the trailers.
        #expect(m.handlerFinished(.ok, "") == .trailers(.ok, resume: true))
        #expect(m.pulled(copied: 0, pending: 0) == .trailers(.ok, message: ""))
    }

    // MARK: Trailers-Only

    @Test func aStatusBeforeAnyMessageIsTrailersOnly() {
        var m = Self.running()
        #expect(m.handlerFinished(.notFound, "no such payment") == .trailersOnly(Status(.notFound, "no such payment")))
        #expect(m.state == .answered)
        #expect(m.pulled(copied: 0, pending: 0) == .fail, "no data source on a Trailers-Only answer")
        #expect(m.handlerSent() == .drop)
        #expect(m.handlerFinished(.ok, "") == .none, "decided once")
    }

    @Test func aStatusAfterMessagesGoesInTrailersWithItsMessage() {
        var m = Self.running()
        #expect(m.handlerSent() == .startResponse)
        #expect(m.handlerFinished(.internal, "boom") == .trailers(.internal, resume: false))
        #expect(m.state == .trailersQueued(.internal, message: "boom"))
        #expect(m.pulled(copied: 7, pending: 0) == .trailers(.internal, message: "boom"))
    }

    @Test func headerRefusalsAreTrailersOnlyInTheirOrder() {
        func refusal(_ h: RequestHead, rules: Machine.Rules = Self.rules) -> Status? {
            let (m, action) = Self.headers(h, rules: rules)
            guard case .refuse(let s) = action else { return nil }
            #expect(m.state == .answered)
            #expect(m.dataArrived() == .drop, "a refused stream's data is dropped")
            return s
        }
        var big = Self.grpc(Self.echo)
        big.tooLarge = true
        big.isPOST = false  // too large wins over everything, even over being an HTTP route
        #expect(refusal(big) == Status(httpStatus: 431, .resourceExhausted, "request headers exceed 16384 bytes"))

        var publicRules = Self.rules
        publicRules.isPublic = true
        publicRules.servesHTTPRoutes = true
        #expect(refusal(Self.grpc(Self.echo), rules: publicRules)
                == Status(httpStatus: 404, .unimplemented, "RPCs are not served on the public port; use the main port"))

        var noRoutes = Self.rules
        noRoutes.servesHTTPRoutes = false
        var get = Self.grpc(Self.echo)
        get.isPOST = false
        get.method = "GET"
        #expect(refusal(get, rules: noRoutes) == Status(httpStatus: 405, .unimplemented, "gRPC requires POST, got GET"))

        var json = Self.grpc(Self.echo)
        json.contentTypeIsGRPC = false
        json.contentType = "application/json"
        #expect(refusal(json, rules: noRoutes) == Status(httpStatus: 415, .internal, "content-type must be application/grpc, got application/json"))
        json.contentType = ""
        #expect(refusal(json, rules: noRoutes) == Status(httpStatus: 415, .internal, "content-type must be application/grpc, got none"))

        #expect(refusal(Self.grpc(nil, path: "/t.T/Nope")) == Status(.unimplemented, "method /t.T/Nope is not implemented"))
        #expect(refusal(Self.grpc(nil, path: "/x.Y/Z")) == Status(.unimplemented, "unknown service x.Y"))

        var badMeta = Self.grpc(Self.echo)
        badMeta.invalidMetadataKey = "x-note"
        #expect(refusal(badMeta) == Status(.invalidArgument, "metadata x-note is not printable ASCII (binary values need a -bin key)"))

        var badTimeout = Self.grpc(Self.echo)
        badTimeout.timeout = "soon"
        #expect(refusal(badTimeout) == Status(.internal, "malformed grpc-timeout"))
        badTimeout.timeout = "123456789S"  // nine digits: more than the spec's eight
        #expect(refusal(badTimeout) == Status(.internal, "malformed grpc-timeout"))
    }

    @Test func theBearerTokenIsCheckedOnlyForMethodsThatNeedIt() {
        var withToken = Self.rules
        withToken.authToken = "s3cret"
        var h = Self.grpc(Self.echo)
        #expect(Self.headers(h, rules: withToken).1 == .refuse(Status(.unauthenticated, "missing or invalid bearer token")))
        h.authorization = Array("Bearer s3cre".utf8)
        #expect(Self.headers(h, rules: withToken).1 == .refuse(Status(.unauthenticated, "missing or invalid bearer token")))
        h.authorization = Array("Bearer s3cret".utf8)
        #expect(Self.headers(h, rules: withToken).1 == .accept(.init(kind: .unary, timeout: nil, messageLimit: nil)))
        // Anyone may call a method without the token; its messages get the small limit.
        #expect(Self.headers(Self.grpc(Self.open), rules: withToken).1 == .accept(.init(kind: .unary, timeout: nil, messageLimit: 64 << 10)))
    }

    // MARK: deadlines

    @Test func grpcTimeoutBecomesTheCallsDeadline() {
        var h = Self.grpc(Self.echo)
        h.timeout = "250m"
        #expect(Self.headers(h).1 == .accept(.init(kind: .unary, timeout: .milliseconds(250), messageLimit: nil)))
        h.timeout = "3S"
        #expect(Self.headers(h).1 == .accept(.init(kind: .unary, timeout: .seconds(3), messageLimit: nil)))
    }

    @Test func aDeadlineEndsTheCallWhereverItIs() {
        var waiting = Self.accepted(Self.echo)  // the request never completed
        #expect(waiting.deadlineExpired() == .trailersOnly(Status(.deadlineExceeded, "deadline exceeded")))
        #expect(waiting.requestEnded(pendingBytes: 0) == .none, "the late END_STREAM runs nothing")

        var running = Self.running()
        #expect(running.deadlineExpired() == .trailersOnly(Status(.deadlineExceeded, "deadline exceeded")))
        #expect(running.handlerSent() == .drop, "the handler's late answer is dropped")

        var sending = Self.accepted(Self.watch)
        _ = sending.handlerSent()
        #expect(sending.pulled(copied: 0, pending: 0) == .deferred)
        #expect(sending.deadlineExpired() == .trailers(.deadlineExceeded, resume: true))
        #expect(sending.deadlineExpired() == .none, "the status is decided once")

        var route = Self.headers({ var h = RequestHead(); h.method = "GET"; h.path = "/go/x"; return h }()).0
        #expect(route.deadlineExpired() == .none, "HTTP routes have no gRPC deadline")
    }

    // MARK: size limits and framing

    @Test func oversizedAndMalformedMessagesAreRefused() {
        var m = Self.accepted(Self.echo)
        #expect(m.framingFailed(.tooLarge(announced: 70000, limit: 65536), encoding: "identity")
                == .trailersOnly(Status(.resourceExhausted, "request message of 70000 bytes exceeds the limit of 65536 bytes")))
        #expect(m.dataArrived() == .drop)

        var flag = Self.accepted(Self.echo)
        #expect(flag.framingFailed(.badFlag(7), encoding: "identity") == .trailersOnly(Status(.internal, "invalid message framing")))
    }

    @Test func aBufferBudgetRefusalIsResourceExhausted() {
        var m = Self.accepted(Self.echo)
        let status = Status(.resourceExhausted, "request data would exceed the server's request buffer; retry later")
        #expect(m.end(status) == .trailersOnly(status))
        #expect(m.end(status) == .none)
    }

    // MARK: compression

    @Test func compressedMessagesAreRefusedByWhatTheyAnnounced() {
        var none = Self.accepted(Self.echo)
        #expect(none.framingFailed(.compressed, encoding: "identity") == .trailersOnly(Status(.internal, "compressed message without grpc-encoding")))
        var empty = Self.accepted(Self.echo)
        #expect(empty.framingFailed(.compressed, encoding: "") == .trailersOnly(Status(.internal, "compressed message without grpc-encoding")))
        var gzip = Self.accepted(Self.echo)
        #expect(gzip.framingFailed(.compressed, encoding: "gzip")
                == .trailersOnly(Status(.unimplemented, "grpc-encoding gzip is not supported", advertiseIdentity: true)))
    }

    // MARK: unary request rules

    @Test func aUnaryCallTakesExactlyOneMessage() {
        var two = Self.accepted(Self.echo)
        #expect(two.unaryMessages(1) == .none)
        #expect(two.unaryMessages(1) == .trailersOnly(Status(.internal, "unary call received more than one request message")))
        var both = Self.accepted(Self.echo)
        #expect(both.unaryMessages(2) == .trailersOnly(Status(.internal, "unary call received more than one request message")))
        var zero = Self.accepted(Self.echo)
        #expect(zero.unaryMessages(0) == .none)
        #expect(zero.requestEnded(pendingBytes: 0) == .answer(.trailersOnly(Status(.internal, "unary call needs exactly one request message, got 0"))))
        var cut = Self.accepted(Self.echo)
        #expect(cut.requestEnded(pendingBytes: 3)
                == .answer(.trailersOnly(Status(.internal, "request ended inside a message (length prefix larger than the body)"))))
    }

    // MARK: streaming

    @Test func aStreamingCallRunsFromItsHeadersAndReadsWhileItAnswers() {
        var m = Self.accepted(Self.watch)
        #expect(m.state == .running(.streaming, requestOpen: true))
        #expect(m.dataArrived() == .streamingMessage)
        #expect(m.unaryMessages(1) == .none, "streaming messages are not counted")
        #expect(m.handlerSent() == .startResponse)
        #expect(m.dataArrived() == .streamingMessage, "the client may still send while we answer")
        #expect(m.requestEnded(pendingBytes: 0) == .finishRequests)
        #expect(m.state == .sending(.streaming, requestOpen: false, deferred: false))
        #expect(m.dataArrived() == .drop)
        #expect(m.requestEnded(pendingBytes: 0) == .none, "END_STREAM once")
        #expect(m.handlerFinished(.ok, "") == .trailers(.ok, resume: false))
    }

    @Test func aRefusalAfterTheResponseBeganEndsInTrailers() {
        // A streaming call already answering: a budget or framing refusal cannot be
        // Trailers-Only any more (the response headers are out); it becomes the trailers.
        var m = Self.accepted(Self.watch)
        _ = m.handlerSent()
        #expect(m.framingFailed(.tooLarge(announced: 9, limit: 8), encoding: "identity") == .trailers(.resourceExhausted, resume: false))
        #expect(m.pulled(copied: 0, pending: 0) == .trailers(.resourceExhausted, message: "request message of 9 bytes exceeds the limit of 8 bytes"))
        #expect(m.handlerFinished(.ok, "") == .none)
    }

    // MARK: cancel, RST_STREAM, the connection going away

    @Test func aResetBeforeTheAnswerIsACancelledCall() {
        var receiving = Self.accepted(Self.echo)
        #expect(receiving.streamClosed() == .cancelled(inFlight: true))
        var running = Self.running()
        #expect(running.streamClosed() == .cancelled(inFlight: true))
        #expect(running.handlerSent() == .drop, "the handler's answer after a reset goes nowhere")
        #expect(running.handlerFinished(.ok, "") == .none)
        #expect(running.isAnswered)
        var sending = Self.accepted(Self.watch)
        _ = sending.handlerSent()
        #expect(sending.streamClosed() == .cancelled(inFlight: true))
        #expect(sending.pulled(copied: 0, pending: 0) == .fail)
        var early = Machine()
        #expect(early.streamClosed() == .cancelled(inFlight: false), "reset during its headers: logged, never in flight")
        var trailers = Self.running()
        _ = trailers.handlerSent()
        _ = trailers.handlerFinished(.ok, "")
        #expect(trailers.streamClosed() == .none, "answered before the reset")
    }

    @Test func theConnectionGoingAwayEndsWhatIsInFlight() {
        // GOAWAY grace over, a socket or protocol error: each stream learns that its connection
        // closed; accepted calls still open were in flight.
        var running = Self.running()
        #expect(running.connectionClosed() == true)
        #expect(running.handlerFinished(.ok, "") == .none)
        var answered = Self.running()
        _ = answered.handlerFinished(.ok, "")
        #expect(answered.connectionClosed() == false)
        var idle = Machine()
        #expect(idle.connectionClosed() == false)
        var route = Self.headers({ var h = RequestHead(); h.method = "GET"; return h }()).0
        #expect(route.connectionClosed() == false, "HTTP routes are not calls in flight")
    }

    // MARK: HTTP routes over HTTP/2

    @Test func anHTTPRouteGoesThroughTheSameMachine() {
        var get = RequestHead()
        get.method = "GET"
        get.path = "/go/demo"
        var (m, action) = Self.headers(get)
        #expect(action == .routeHTTP)
        #expect(m.state == .httpReceiving)
        #expect(m.dataArrived() == .httpBody)
        #expect(m.requestEnded(pendingBytes: 0) == .runHTTP)
        #expect(m.dataArrived() == .drop)
        #expect(m.handlerSent() == .drop, "no gRPC messages on a route")
        #expect(m.httpResponded(hasBody: true) == true)
        #expect(m.httpResponded(hasBody: true) == false, "answered once")
        #expect(m.isAnswered)
        #expect(m.pulled(copied: 100, pending: 50) == .data)
        #expect(m.pulled(copied: 50, pending: 0) == .endStream)
        #expect(m.streamClosed() == .none)

        // A POST that is not gRPC (a Connect call) on an RPC path is a route too.
        var connect = Self.grpc(Self.echo)
        connect.contentTypeIsGRPC = false
        connect.contentType = "application/json"
        #expect(Self.headers(connect).1 == .routeHTTP)

        // Refused while its body arrives (413, 503), without a body: answered at once.
        var refused = Self.headers(get).0
        #expect(refused.httpResponded(hasBody: false) == true)
        #expect(refused.state == .answered)
        #expect(refused.requestEnded(pendingBytes: 0) == .none, "the handler never runs")

        var reset = Self.headers(get).0
        _ = reset.requestEnded(pendingBytes: 0)
        #expect(reset.streamClosed() == .cancelled(inFlight: false))
    }

    // MARK: events out of place

    @Test func eventsOutOfPlaceChangeNothing() {
        var idle = Machine()
        #expect(idle.isAwaitingHeaders)
        #expect(idle.dataArrived() == .drop)
        #expect(idle.handlerSent() == .drop)
        #expect(idle.end(Status(.internal, "x")) == .none)
        #expect(idle.requestEnded(pendingBytes: 0) == .none)
        #expect(idle.pulled(copied: 0, pending: 0) == .fail)
        #expect(idle.httpResponded(hasBody: false) == false)
        #expect(idle.state == .idle)

        var call = Self.accepted(Self.echo)
        var again = Self.grpc(Self.echo)
        #expect(call.headersEnded(&again, rules: Self.rules, knowsService: { _ in true }) == .none, "END_HEADERS once")
        #expect(call.pulled(copied: 0, pending: 0) == .fail, "no response started")
        #expect(call.httpResponded(hasBody: true) == false, "a gRPC call is not answered as a route")
        #expect(call.state == .receiving(.unary, messages: 0))

        var closed = Self.running()
        _ = closed.streamClosed()
        #expect(closed.streamClosed() == .none)
        #expect(closed.requestEnded(pendingBytes: 0) == .none)
        #expect(closed.dataArrived() == .drop)
        #expect(closed.connectionClosed() == false)
    }

    // MARK: the message prefix

    @Test func theMessagePrefixIsWrittenInOnePlace() throws {
        var queue: [UInt8] = [9, 9]
        let message = [UInt8](repeating: 7, count: 70_000)
        GRPCWire.appendFrame(message, to: &queue)
        #expect(Array(queue[0..<7]) == [9, 9, 0, 0x00, 0x01, 0x11, 0x70], "flag 0, big-endian 70000")
        #expect(Array(queue[2...]) == GRPCWire.frame(message))
        var d = GRPCDeframer(limit: 1 << 20)
        let back = try Array(queue[2...]).withUnsafeBytes { try d.append($0) }
        #expect(back == [message])
    }
}
