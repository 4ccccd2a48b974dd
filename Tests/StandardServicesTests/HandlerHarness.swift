import ProtoCodec
import RPC

/// Calls registered handlers directly, as the transport would, without a network.
enum Harness {
    static func context(_ path: String, metadata: Metadata = Metadata()) -> RPCContext {
        RPCContext(path: path, metadata: metadata, deadline: nil, requestID: "test", peer: "127.0.0.1:1")
    }

    static func method(_ methods: [RPCMethod], _ path: String) -> RPCMethod? {
        methods.first { $0.path == path }
    }

    static func unary(_ methods: [RPCMethod], _ path: String, _ request: ProtoMessage,
                      metadata: Metadata = Metadata(), response: String) async throws -> ProtoMessage {
        guard let m = method(methods, path), let handler = m.kind.unaryHandler else {
            throw RPCError(.unimplemented, path)
        }
        let bytes = try await handler(try ProtoCodec.encode(request), context(path, metadata: metadata))
        return try ProtoCodec.decode(bytes, as: response)
    }

    /// Feeds `requests` (raw bytes) into a bidi handler and collects every response, decoded.
    static func bidi(_ methods: [RPCMethod], _ path: String, _ requests: [[UInt8]],
                     response: String) async throws -> [ProtoMessage] {
        guard let m = method(methods, path), case .bidiStreaming(let handler) = m.kind else {
            throw RPCError(.unimplemented, path)
        }
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        for r in requests { continuation.yield(r) }
        continuation.finish()
        let collected = Collected()
        try await handler(stream, RPCResponseWriter { await collected.append($0) }, context(path))
        return try await collected.items.map { try ProtoCodec.decode($0, as: response) }
    }
}

actor Collected {
    private(set) var items: [[UInt8]] = []
    func append(_ item: [UInt8]) { items.append(item) }
}
