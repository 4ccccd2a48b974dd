import MessageRPC
import PixTrackMessages
import ProtoCodec
import RPC

/// The services every PixTrack server can expose besides its domain: gRPC health checking,
/// gRPC server reflection (v1 and v1alpha) and, for tests only, `pixtrack.testing.v1.TestService`.
///
/// Each function returns the methods to register in the server's `RPCRouter`.
public enum StandardServices {
    /// Whether the server can do its work right now (e.g. the database answers).
    /// Called on the I/O thread for every check: it must answer at once (read a cached status).
    public typealias HealthStatusProvider = @Sendable () -> Bool

    public static let healthServiceName = "grpc.health.v1.Health"
    public static let reflectionServiceNames = [
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    ]
    public static let testServiceName = "pixtrack.testing.v1.TestService"

    /// `grpc.health.v1.Health/Check` (no auth). An empty service name asks about the whole
    /// server; a name in `knownServices` (typically every registered service) gets the same
    /// answer; any other name fails with `NOT_FOUND`. `isServing` is asked on every call.
    ///
    /// `Watch` is not registered (it is server-streaming): the transport answers UNIMPLEMENTED,
    /// which the health protocol tells clients to accept without retrying.
    public static func health(knownServices: [String], isServing: @escaping HealthStatusProvider) -> [RPCMethod] {
        let known = Set(knownServices)
        // Load balancers poll this all day: the two possible answers are encoded once, here.
        let answers = [Grpc_Health_V1_HealthCheckResponse.ServingStatus.serving, .notServing].map { status in
            var response = Grpc_Health_V1_HealthCheckResponse()
            response.status = status
            return Result { try encodeResponse(response) }
        }
        let check: InlineUnaryHandler = { request, _ in
            let service = request.isEmpty ? ""
                : try decodeRequest(request, as: Grpc_Health_V1_HealthCheckRequest.self).service
            guard service.isEmpty || known.contains(service) else {
                throw RPCError(.notFound, "unknown service '\(service)'")
            }
            return try answers[isServing() ? 0 : 1].get()
        }
        return [RPCMethod(service: healthServiceName, method: "Check", requiresAuth: false, kind: .unaryInline(check))]
    }

    /// `ServerReflectionInfo` of `grpc.reflection.v1` and `v1alpha` (no auth; bidirectional).
    ///
    /// `services` is what `list_services` answers (typically `RPCRouter.serviceNames`); the two
    /// reflection services are always added. Files and symbols come from `index`.
    public static func reflection(services: [String], index: ReflectionIndex) -> [RPCMethod] {
        let listed = Set(services).union(reflectionServiceNames).sorted()
        return reflectionServiceNames.map { service in
            let responder = ReflectionResponder(
                package: String(service.dropLast(".ServerReflection".count)), services: listed, index: index)
            let handler: BidiStreamingHandler = { requests, writer, _ in
                for await request in requests {
                    try Task.checkCancellation()
                    try await writer.send(try responder.respond(to: request))
                }
            }
            return RPCMethod(service: service, method: "ServerReflectionInfo", requiresAuth: false,
                             kind: .bidiStreaming(handler))
        }
    }

    /// `pixtrack.testing.v1.TestService` (auth required): register only when the server runs
    /// with test methods enabled.
    ///
    /// - `Sleep` waits `millis` and answers `slept_millis`; cancellation ends it at once.
    /// - `Echo` fails with `fail_code`/`fail_message` when `fail_code` is non-zero (unknown codes
    ///   become UNKNOWN), else echoes `text` and `payload` plus every request metadata entry.
    public static func testing() -> [RPCMethod] {
        let sleep: UnaryHandler = { request, _ in
            let millis = try decodeRequest(request, as: Pixtrack_Testing_V1_SleepRequest.self).millis
            try await Task.sleep(for: .milliseconds(Int(millis)))
            var response = Pixtrack_Testing_V1_SleepResponse()
            response.sleptMillis = millis
            return try encodeResponse(response)
        }
        let echo: UnaryHandler = { request, context in
            let req = try decodeRequest(request, as: Pixtrack_Testing_V1_EchoRequest.self)
            if req.failCode != 0 {
                throw RPCError(RPCCode(rawValue: Int(req.failCode)) ?? .unknown, req.failMessage)
            }
            var response = Pixtrack_Testing_V1_EchoResponse()
            response.text = req.text
            response.payload = req.payload
            response.metadata = context.metadata.map { entry in
                var m = Pixtrack_Testing_V1_MetadataEntry()
                m.key = entry.key
                m.value = entry.value
                return m
            }
            return try encodeResponse(response)
        }
        return [
            // Neither blocks (Sleep awaits a timer): both run on the connection's event loop.
            RPCMethod(service: testServiceName, method: "Sleep", requiresAuth: true, onEventLoop: true, kind: .unary(sleep)),
            RPCMethod(service: testServiceName, method: "Echo", requiresAuth: true, onEventLoop: true, kind: .unary(echo)),
        ]
    }
}

/// A request that does not parse is the caller's fault: INVALID_ARGUMENT.
func decodeRequest(_ bytes: [UInt8], as typeName: String) throws -> ProtoMessage {
    do {
        return try ProtoCodec.decode(bytes, as: typeName)
    } catch let error as ProtoCodecError {
        throw RPCError(.invalidArgument, "request is not a valid \(typeName)", cause: error)
    }
}

/// A response that does not encode is our bug: INTERNAL, detail kept server-side.
func encodeResponse(_ message: ProtoMessage) throws -> [UInt8] {
    do {
        return try ProtoCodec.encode(message)
    } catch let error as ProtoCodecError {
        throw RPCError(.internal, "internal error", cause: error)
    }
}
