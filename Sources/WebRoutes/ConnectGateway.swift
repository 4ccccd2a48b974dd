import ProtoCodec
import RPC

/// Unary calls over HTTP/1.1 in the Connect protocol: `POST /pkg.Service/Method` with a
/// proto3-JSON (`application/json`) or binary (`application/proto`) body runs the same handler
/// as the gRPC path. Errors answer `{"code":"invalid_argument","message":"…"}` with the
/// matching HTTP status.
public struct ConnectGateway: Sendable {
    let router: RPCRouter
    let authToken: String?
    let metrics: Metrics
    let logger: Logger
    /// `/pkg.Service/Method` → (input type, output type), from the protoc-c service descriptors.
    let types: [String: (input: String, output: String)]

    public init(router: RPCRouter, authToken: String?, metrics: Metrics, logger: Logger) {
        self.router = router
        self.authToken = authToken
        self.metrics = metrics
        self.logger = logger
        var t: [String: (String, String)] = [:]
        for s in ProtoSchema.services {
            for m in s.methods { t[s.path(of: m)] = (m.inputType, m.outputType) }
        }
        types = t
    }

    public var handler: HTTPHandler {
        let gw = self
        return { request in await gw.handle(request) }
    }

    func handle(_ request: HTTPRequest) async -> HTTPResponse {
        let started = ContinuousClock.now
        let path = request.path
        let (response, code, known) = await call(request)
        metrics.recordCall(method: known ? path : "unknown", code: code,
                           seconds: Double((ContinuousClock.now - started) / .microseconds(1)) / 1e6, transport: "connect")
        return response
    }

    private func call(_ request: HTTPRequest) async -> (HTTPResponse, RPCCode, Bool) {
        let path = request.path
        guard let method = router.method(for: path), let handler = method.kind.unaryHandler, let t = types[path] else {
            let e = RPCError(.unimplemented, router.method(for: path) == nil ? "unknown method \(path)" : "\(path) is not a unary method")
            return (Self.errorResponse(e), e.code, false)
        }
        guard request.method == "POST" else {
            return (HTTPResponse.jsonError(405, code: "unimplemented", message: "use POST for \(path)"), .unimplemented, true)
        }
        let contentType = (request.header("content-type") ?? "").prefix { $0 != ";" }.lowercased().trimmingSpaces()
        let json: Bool
        switch contentType {
        case "application/json": json = true
        case "application/proto": json = false
        default:
            return (HTTPResponse.jsonError(415, code: "invalid_argument",
                                           message: "content-type must be application/json or application/proto, got \(contentType.isEmpty ? "none" : contentType)"),
                    .invalidArgument, true)
        }
        if method.requiresAuth, let token = authToken,
           !BearerToken.matches(request.header("authorization").map { Array($0.utf8) }, token: token) {
            let e = RPCError(.unauthenticated, "missing or invalid bearer token")
            return (Self.errorResponse(e), e.code, true)
        }
        var deadline: ContinuousClock.Instant?
        if let ms = request.header("connect-timeout-ms") {
            guard let v = Int64(ms), v > 0, ms.count <= 10 else {
                let e = RPCError(.invalidArgument, "connect-timeout-ms must be a positive integer")
                return (Self.errorResponse(e), e.code, true)
            }
            deadline = .now + .milliseconds(v)
        }
        var metadata = Metadata()
        for (n, v) in request.headers where !Self.transportHeaders.contains(n) {
            metadata.add(lowercasedKey: n, v)
        }
        let requestID = request.header("x-request-id").map { String($0.prefix(64)) } ?? BearerToken.newRequestID()
        let context = RPCContext(path: path, metadata: metadata, deadline: deadline, requestID: requestID, peer: request.peer)
        do {
            let input = json ? try ProtoCodec.encode(try ProtoJSON.decode(request.body, as: t.input)) : request.body
            let output = try await Self.run(handler, input, context, deadline: deadline)
            let body = json ? try ProtoJSON.encode(try ProtoCodec.decode(output, as: t.output)) : output
            return (HTTPResponse(status: 200, headers: [("content-type", json ? "application/json" : "application/proto")], body: body), .ok, true)
        } catch let e as ProtoCodecError {
            let err = RPCError(.invalidArgument, "invalid request body: \(e.message)")
            return (Self.errorResponse(err), err.code, true)
        } catch {
            let e = RPCError(mapping: error)
            if !(error is RPCError), !(error is any RPCErrorConvertible) {
                logger.error("rpc_internal_error", ("request_id", requestID), ("method", path), ("error", String(describing: error)))
            }
            return (Self.errorResponse(e), e.code, true)
        }
    }

    /// Runs the handler, cancelling it at the deadline.
    private static func run(_ handler: @escaping UnaryHandler, _ input: [UInt8], _ context: RPCContext,
                            deadline: ContinuousClock.Instant?) async throws -> [UInt8] {
        guard let deadline else { return try await handler(input, context) }
        return try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask { try await handler(input, context) }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                throw RPCError(.deadlineExceeded, "deadline exceeded")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    static let transportHeaders: Set<String> = [
        "content-type", "content-length", "connection", "keep-alive", "host", "transfer-encoding", "expect",
        "authorization", "connect-protocol-version", "connect-timeout-ms", "accept-encoding", "user-agent",
    ]

    /// Connect's code names and HTTP statuses.
    static func errorResponse(_ e: RPCError) -> HTTPResponse {
        let (name, status): (String, Int) = switch e.code {
        case .ok: ("ok", 200)
        case .cancelled: ("canceled", 499)
        case .unknown: ("unknown", 500)
        case .invalidArgument: ("invalid_argument", 400)
        case .deadlineExceeded: ("deadline_exceeded", 504)
        case .notFound: ("not_found", 404)
        case .alreadyExists: ("already_exists", 409)
        case .permissionDenied: ("permission_denied", 403)
        case .resourceExhausted: ("resource_exhausted", 429)
        case .failedPrecondition: ("failed_precondition", 400)
        case .aborted: ("aborted", 409)
        case .outOfRange: ("out_of_range", 400)
        case .unimplemented: ("unimplemented", 501)
        case .internal: ("internal", 500)
        case .unavailable: ("unavailable", 503)
        case .dataLoss: ("data_loss", 500)
        case .unauthenticated: ("unauthenticated", 401)
        }
        return .jsonError(status, code: name, message: e.message)
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
