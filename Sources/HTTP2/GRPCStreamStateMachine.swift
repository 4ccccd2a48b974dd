import RPC

/// What one HTTP/2 stream's headers said, collected by `H2Connection.header` as they arrive.
/// The state machine reads it once, at END_HEADERS.
struct RequestHead {
    var isPOST = false
    var authority = ""
    /// The request method when it is not POST (for the error message and HTTP routes).
    var method = ""
    var path = ""
    /// The registered method `path` names, if any.
    var route: RPCMethod?
    var contentType = ""
    var contentTypeIsGRPC = false
    var encoding = "identity"
    var timeout: String?
    var metadata = Metadata()
    var requestID: String?
    var authorization: [UInt8]?
    var headerBytes = 0
    var tooLarge = false
    /// A metadata key whose value is not printable ASCII (the gRPC spec's ASCII-Value).
    var invalidMetadataKey: String?
    /// Every header as sent, for requests that may be HTTP routes (not POST, or an unknown path):
    /// a gRPC call never pays for it.
    var rawHeaders: [(name: String, value: String)]?
    /// `:path` with its query, when `rawHeaders` are kept.
    var target = ""
}

/// The life of one HTTP/2 stream — a gRPC call, or an HTTP route reached over HTTP/2 — as a
/// value. `H2Connection` reports what happened on the stream (`headersEnded`, `dataArrived`,
/// `requestEnded`, a handler's message or status, the data source being pulled, the stream
/// closing) and performs the action it gets back: nghttp2 submissions, handler tasks, buffer
/// accounting and metrics all stay outside, so every rule below can be tested without a socket.
/// The buffers (partial messages, queued response bytes) stay in the stream object too; the
/// machine keeps only what decides the next step.
struct GRPCStreamStateMachine {
    /// A call's handler, as far as the stream's rules go.
    enum Kind: Equatable {
        /// Runs in a task once the one request message is complete (END_STREAM).
        case unary
        /// Like `unary`, but answered right on the loop.
        case unaryInline
        /// Starts at END_HEADERS and reads request messages as they come.
        case streaming

        init(_ kind: RPCMethod.Kind) {
            switch kind {
            case .unary: self = .unary
            case .unaryInline: self = .unaryInline
            case .bidiStreaming: self = .streaming
            }
        }
    }

    enum State: Equatable {
        /// HEADERS begun, END_HEADERS not seen yet (the connection's header timeout applies).
        /// → `receiving` (a unary call accepted), `running` (a streaming call accepted: its
        /// handler starts now), `httpReceiving` (an HTTP route), `answered` (refused,
        /// Trailers-Only), `closed` (reset by the peer).
        case idle
        /// A unary call accepted, its request arriving; `messages` complete so far (at most 1).
        /// → `running` (END_STREAM after exactly one message), `answered` (a second message,
        /// bad framing, a buffer budget, the deadline: Trailers-Only), `closed`.
        case receiving(Kind, messages: Int)
        /// The handler runs and has queued nothing yet. `requestOpen`: the peer may still send
        /// (streaming calls before END_STREAM).
        /// → `sending` (its first message), `answered` (its status before any message:
        /// Trailers-Only), `closed`.
        case running(Kind, requestOpen: Bool)
        /// Response headers submitted, messages queued for the data source; `deferred`: the data
        /// source ran dry and nghttp2 waits for `resume_data`.
        /// → `trailersQueued` (the handler's status, or a refusal such as a budget), `closed`.
        case sending(Kind, requestOpen: Bool, deferred: Bool)
        /// The final status is decided; it goes out as trailers once the queued messages are.
        /// → `answered` (the data source emitted them), `closed`.
        case trailersQueued(RPCCode, message: String)
        /// An HTTP route: the request body arrives. → `httpRunning` (END_STREAM), `answered` or
        /// `httpResponding` (a refusal: 413, 503), `closed`.
        case httpReceiving
        /// The route's handler runs. → `answered` (a response without body), `httpResponding`,
        /// `closed`.
        case httpRunning
        /// The route's response is submitted; its body ends the stream. → `answered`, `closed`.
        case httpResponding
        /// The final status is out (or submitted): nothing more is answered, and what the peer
        /// still sends is dropped. → `closed`.
        case answered
        /// nghttp2 closed the stream (both sides ended, RST_STREAM either way, or the connection
        /// went away). Terminal.
        case closed
    }

    /// What a call is refused or ended with.
    struct FinalStatus: Equatable {
        /// `:status` of a Trailers-Only answer (200 unless the request was not gRPC at all).
        var httpStatus = 200
        var code: RPCCode
        var message: String
        /// Add `grpc-accept-encoding: identity` (an encoding we do not decode was used).
        var advertiseIdentity = false

        init(httpStatus: Int = 200, _ code: RPCCode, _ message: String, advertiseIdentity: Bool = false) {
            self.httpStatus = httpStatus
            self.code = code
            self.message = message
            self.advertiseIdentity = advertiseIdentity
        }
    }

    /// The connection's side of the rules (fixed for its life).
    struct Rules {
        /// Accepted on the public listener: no RPCs at all.
        var isPublic = false
        /// Streams that are not gRPC go to the HTTP routes.
        var servesHTTPRoutes = false
        /// Methods with `requiresAuth` need `authorization: Bearer <token>` when set.
        var authToken: String?
        var maxHeaderListBytes = 16 << 10
        /// The message limit of methods anyone may call (no token needed).
        var maxUnauthenticatedMessageBytes = 64 << 10
    }

    /// How the final status leaves, when an event decided it.
    enum Answer: Equatable {
        /// Nothing to send: already decided, or nothing to answer.
        case none
        /// One HEADERS frame with `:status`, `grpc-status`, `grpc-message`, ending the stream.
        /// The call is over: its handler is cancelled and its buffers released.
        case trailersOnly(FinalStatus)
        /// Trailers after the queued messages (the data source emits them when drained); resume
        /// the data source first when `resume`. The call is over as above.
        case trailers(RPCCode, resume: Bool)
    }

    /// A call accepted at END_HEADERS.
    struct Accepted: Equatable {
        var kind: Kind
        /// From `grpc-timeout`: the call's deadline is the stream's start plus this.
        var timeout: Duration?
        /// Lower the message limit to this (methods anyone may call).
        var messageLimit: Int?
    }

    enum HeadersAction: Equatable {
        /// Not the first END_HEADERS of the stream: nothing to do.
        case none
        /// Answer Trailers-Only at once.
        case refuse(FinalStatus)
        /// An HTTP route: collect its body; it runs at END_STREAM.
        case routeHTTP
        /// A gRPC call: set up its context (and deadline); a streaming handler starts now.
        case accept(Accepted)
    }

    /// What DATA on the stream is for.
    enum DataDisposition: Equatable {
        /// Nobody's: give the bytes back to the peer's window and forget them.
        case drop
        /// An HTTP route's body.
        case httpBody
        /// A unary call's request: held, deframed, kept until END_STREAM.
        case unaryMessage
        /// A streaming call's request: held, deframed, handed to the running handler.
        case streamingMessage
    }

    enum EndOfRequestAction: Equatable {
        case none
        /// Run the HTTP route's handler.
        case runHTTP
        /// Tell the streaming handler that no more requests come.
        case finishRequests
        /// Run the unary handler on the one request message (in a task, or inline).
        case runUnary(inline: Bool)
        /// The request was malformed: answer so.
        case answer(Answer)
    }

    enum SendAction: Equatable {
        /// The call is already answered (or gone): the message is dropped, the handler told.
        case drop
        /// Submit the response headers with the data source, then queue the message.
        case startResponse
        /// Queue the message; resume the data source when `resume`.
        case queue(resume: Bool)
    }

    /// What the data source answers nghttp2 after copying what was queued.
    enum PullAction: Equatable {
        /// The bytes copied (more may follow).
        case data
        /// Nothing queued: NGHTTP2_ERR_DEFERRED until the next message resumes it.
        case deferred
        /// The bytes copied end the stream (an HTTP route's body).
        case endStream
        /// The bytes copied are the last DATA; submit these trailers (END_STREAM on them).
        case trailers(RPCCode, message: String)
        /// No response is being sent on this stream: fail the callback.
        case fail
    }

    enum CloseAction: Equatable {
        case none
        /// Closed (reset by the peer) before we answered: cancel what runs and count it as a
        /// cancelled call; `inFlight`: the call was accepted (it counts as in flight).
        case cancelled(inFlight: Bool)
    }

    private(set) var state: State = .idle

    init() {}

    // MARK: queries

    /// END_HEADERS has not arrived (a stream still here after the header timeout is a slow client).
    var isAwaitingHeaders: Bool { state == .idle }

    /// The final status is decided (or the stream is gone): a deadline or a message is moot.
    var isAnswered: Bool {
        switch state {
        case .trailersQueued, .httpResponding, .answered, .closed: true
        case .idle, .receiving, .running, .sending, .httpReceiving, .httpRunning: false
        }
    }

    /// An accepted call whose status is not decided yet (it counts as in flight).
    private var isCallInFlight: Bool {
        switch state {
        case .receiving, .running, .sending: true
        default: false
        }
    }

    // MARK: request events

    /// END_HEADERS. Checks, in this order: header size (431), not gRPC → an HTTP route when the
    /// connection serves them, the public port (404), POST (405), content-type (415), the method
    /// (UNIMPLEMENTED), metadata values (INVALID_ARGUMENT), the bearer token (UNAUTHENTICATED),
    /// `grpc-timeout` (INTERNAL when malformed). Every refusal is Trailers-Only. `head` is only
    /// read; it is passed `inout` so that it is read where it lies, not copied.
    mutating func headersEnded(_ head: inout RequestHead, rules: Rules, knowsService: (String) -> Bool) -> HeadersAction {
        guard state == .idle else { return .none }
        func refuse(_ status: FinalStatus) -> HeadersAction {
            state = .answered
            return .refuse(status)
        }
        if head.tooLarge {
            return refuse(FinalStatus(httpStatus: 431, .resourceExhausted, "request headers exceed \(rules.maxHeaderListBytes) bytes"))
        }
        // Not gRPC (another method or content-type): an HTTP route, the same handlers as
        // HTTP/1.1 (browsers and gateways speak h2 once TLS is in front). It runs at END_STREAM.
        if !(head.isPOST && head.contentTypeIsGRPC), rules.servesHTTPRoutes {
            state = .httpReceiving
            return .routeHTTP
        }
        if rules.isPublic {
            return refuse(FinalStatus(httpStatus: 404, .unimplemented, "RPCs are not served on the public port; use the main port"))
        }
        guard head.isPOST else {
            return refuse(FinalStatus(httpStatus: 405, .unimplemented, "gRPC requires POST, got \(head.method)"))
        }
        guard head.contentTypeIsGRPC else {
            return refuse(FinalStatus(httpStatus: 415, .internal,
                                      "content-type must be application/grpc, got \(head.contentType.isEmpty ? "none" : head.contentType)"))
        }
        guard let method = head.route else {
            let service = String(head.path.dropFirst().prefix { $0 != "/" })
            return refuse(FinalStatus(.unimplemented, knowsService(service) ? "method \(head.path) is not implemented" : "unknown service \(service)"))
        }
        if let key = head.invalidMetadataKey {
            return refuse(FinalStatus(.invalidArgument, "metadata \(key) is not printable ASCII (binary values need a -bin key)"))
        }
        if method.requiresAuth, let token = rules.authToken, !BearerToken.matches(head.authorization, token: token) {
            return refuse(FinalStatus(.unauthenticated, "missing or invalid bearer token"))
        }
        var timeout: Duration?
        if let t = head.timeout {
            guard let d = GRPCWire.parseTimeout(t) else { return refuse(FinalStatus(.internal, "malformed grpc-timeout")) }
            timeout = d
        }
        let kind = Kind(method.kind)
        state = kind == .streaming ? .running(kind, requestOpen: true) : .receiving(kind, messages: 0)
        // Anyone may call a method that needs no token: its messages get the small limit.
        return .accept(Accepted(kind: kind, timeout: timeout, messageLimit: method.requiresAuth ? nil : rules.maxUnauthenticatedMessageBytes))
    }

    /// DATA arrived: whose is it?
    func dataArrived() -> DataDisposition {
        switch state {
        case .receiving: .unaryMessage
        case .running(.streaming, requestOpen: true), .sending(.streaming, requestOpen: true, _): .streamingMessage
        case .httpReceiving: .httpBody
        default: .drop
        }
    }

    /// The deframer refused the request's bytes: too large (RESOURCE_EXHAUSTED), compressed
    /// (we decode only identity: UNIMPLEMENTED with `grpc-accept-encoding: identity`, or
    /// INTERNAL when no `grpc-encoding` announced it), or a flag byte that is neither 0 nor 1.
    mutating func framingFailed(_ failure: GRPCDeframer.Failure, encoding: String) -> Answer {
        switch failure {
        case .tooLarge(let announced, let limit):
            end(FinalStatus(.resourceExhausted, "request message of \(announced) bytes exceeds the limit of \(limit) bytes"))
        case .compressed:
            if encoding == "identity" || encoding.isEmpty {
                end(FinalStatus(.internal, "compressed message without grpc-encoding"))
            } else {
                end(FinalStatus(.unimplemented, "grpc-encoding \(encoding) is not supported", advertiseIdentity: true))
            }
        case .badFlag:
            end(FinalStatus(.internal, "invalid message framing"))
        }
    }

    /// `count` more complete request messages of a unary call: a second one is refused.
    mutating func unaryMessages(_ count: Int) -> Answer {
        guard case .receiving(let kind, let had) = state, count > 0 else { return .none }
        if had + count > 1 { return end(FinalStatus(.internal, "unary call received more than one request message")) }
        state = .receiving(kind, messages: had + count)
        return .none
    }

    /// END_STREAM from the peer. `pendingBytes`: request bytes left in the deframer (the last
    /// message's length prefix promised more than came: INTERNAL).
    mutating func requestEnded(pendingBytes: Int) -> EndOfRequestAction {
        switch state {
        case .httpReceiving:
            state = .httpRunning
            return .runHTTP
        case .receiving, .running(_, requestOpen: true), .sending(_, requestOpen: true, _):
            if pendingBytes > 0 {
                return .answer(end(FinalStatus(.internal, "request ended inside a message (length prefix larger than the body)")))
            }
        default:
            return .none
        }
        switch state {
        case .receiving(let kind, let messages):
            guard messages == 1 else {
                return .answer(end(FinalStatus(.internal, "unary call needs exactly one request message, got \(messages)")))
            }
            state = .running(kind, requestOpen: false)
            return .runUnary(inline: kind == .unaryInline)
        case .running(let kind, _):
            state = .running(kind, requestOpen: false)
            return .finishRequests
        case .sending(let kind, _, let deferred):
            state = .sending(kind, requestOpen: false, deferred: deferred)
            return .finishRequests
        default:
            return .none
        }
    }

    // MARK: response events

    /// The handler has a response message.
    mutating func handlerSent() -> SendAction {
        switch state {
        case .running(let kind, let open):
            state = .sending(kind, requestOpen: open, deferred: false)
            return .startResponse
        case .sending(let kind, let open, let deferred):
            state = .sending(kind, requestOpen: open, deferred: false)
            return .queue(resume: deferred)
        default:
            return .drop
        }
    }

    /// The handler returned (or threw) with this status.
    mutating func handlerFinished(_ code: RPCCode, _ message: String) -> Answer {
        end(FinalStatus(code, message))
    }

    /// The call's deadline passed before its status was decided.
    mutating func deadlineExpired() -> Answer {
        isCallInFlight ? end(FinalStatus(.deadlineExceeded, "deadline exceeded")) : .none
    }

    /// Ends an accepted call with `status`, unless it is already decided: Trailers-Only when no
    /// message went out, trailers after the queued messages otherwise (the HTTP status of a
    /// refusal is then moot: the response headers are gone). Also how a call is refused while
    /// it runs (a buffer budget, bad framing).
    mutating func end(_ status: FinalStatus) -> Answer {
        switch state {
        case .receiving, .running:
            state = .answered
            return .trailersOnly(status)
        case .sending(_, _, let deferred):
            state = .trailersQueued(status.code, message: status.message)
            return .trailers(status.code, resume: deferred)
        case .idle, .trailersQueued, .httpReceiving, .httpRunning, .httpResponding, .answered, .closed:
            return .none
        }
    }

    /// nghttp2's data source copied `copied` queued bytes; `pending` are left.
    mutating func pulled(copied: Int, pending: Int) -> PullAction {
        switch state {
        case .sending(let kind, let open, _):
            guard copied == 0 else { return .data }
            state = .sending(kind, requestOpen: open, deferred: true)
            return .deferred
        case .trailersQueued(let code, let message):
            guard pending == 0 else { return .data }
            state = .answered
            return .trailers(code, message: message)
        case .httpResponding:
            guard pending == 0 else { return .data }
            state = .answered
            return .endStream
        case .idle, .receiving, .running, .httpReceiving, .httpRunning, .answered, .closed:
            return .fail
        }
    }

    /// An HTTP route's response (or refusal) is ready: true when it is to be submitted (once).
    mutating func httpResponded(hasBody: Bool) -> Bool {
        switch state {
        case .httpReceiving, .httpRunning:
            state = hasBody ? .httpResponding : .answered
            return true
        default:
            return false
        }
    }

    // MARK: the end

    /// nghttp2 closed the stream.
    mutating func streamClosed() -> CloseAction {
        defer { state = .closed }
        switch state {
        case .receiving, .running, .sending: return .cancelled(inFlight: true)
        case .idle, .httpReceiving, .httpRunning: return .cancelled(inFlight: false)
        case .trailersQueued, .httpResponding, .answered, .closed: return .none
        }
    }

    /// The connection closed under the stream (GOAWAY grace over, a socket error, a protocol
    /// error): true when an accepted call was still in flight.
    mutating func connectionClosed() -> Bool {
        defer { state = .closed }
        return isCallInFlight
    }
}
