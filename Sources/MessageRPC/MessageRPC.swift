import PixTrackMessages
import RPC

// The one place that turns gRPC bytes into generated messages and back for handlers, with the
// errors every service gives: bytes that are not the request type are the caller's fault
// (INVALID_ARGUMENT, "request is not a valid <type>"); a response that does not encode is our
// bug (INTERNAL, "internal error", the detail kept for the log).

/// `bytes` as a `M`, or INVALID_ARGUMENT.
public func decodeRequest<M: GeneratedMessage>(_ bytes: [UInt8], as type: M.Type) throws -> M {
    do {
        return try M(serializedBytes: bytes)
    } catch {
        throw RPCError(.invalidArgument, "request is not a valid \(M.protoMessageName)", cause: error)
    }
}

/// `message`'s bytes, or INTERNAL.
public func encodeResponse<M: GeneratedMessage>(_ message: M) throws -> [UInt8] {
    do {
        return try message.serializedBytes()
    } catch {
        throw RPCError(.internal, "internal error", cause: error)
    }
}

extension RPCMethod {
    /// A unary method on generated messages: the request decoded, `body` run, its answer encoded.
    public static func unary<Request: GeneratedMessage, Response: GeneratedMessage>(
        service: String, method: String, requiresAuth: Bool = true, onEventLoop: Bool = false,
        _ body: @escaping @Sendable (Request) async throws -> Response
    ) -> RPCMethod {
        RPCMethod(service: service, method: method, requiresAuth: requiresAuth, onEventLoop: onEventLoop, kind: .unary { bytes, _ in
            try encodeResponse(try await body(try decodeRequest(bytes, as: Request.self)))
        })
    }
}
