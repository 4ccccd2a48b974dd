/// A unary handler: one encoded request message in, one encoded response message out.
/// Codecs live above this layer; the RPC core only moves bytes.
public typealias UnaryHandler = @Sendable (_ request: [UInt8], _ context: RPCContext) async throws -> [UInt8]

/// A unary handler that runs on the connection's I/O thread, in the middle of reading the
/// socket: no task, no thread hop. Only for answers that take constant, tiny time and never
/// wait (a cached health status); it cannot `await`, and it must not block or loop over input.
public typealias InlineUnaryHandler = @Sendable (_ request: [UInt8], _ context: RPCContext) throws -> [UInt8]

/// A bidirectional-streaming handler: reads request messages from `requests` until it ends,
/// writes any number of responses with `send`. Returning ends the call with `OK`; throwing ends
/// it with the mapped status.
public typealias BidiStreamingHandler = @Sendable (
    _ requests: AsyncStream<[UInt8]>, _ send: RPCResponseWriter, _ context: RPCContext
) async throws -> Void

/// Sends one response message on a streaming call. Suspends until the transport accepted it.
public struct RPCResponseWriter: Sendable {
    private let write: @Sendable ([UInt8]) async throws -> Void
    public init(_ write: @escaping @Sendable ([UInt8]) async throws -> Void) { self.write = write }
    public func send(_ message: [UInt8]) async throws { try await write(message) }
}

/// One method the server answers.
public struct RPCMethod: Sendable {
    public enum Kind: Sendable {
        case unary(UnaryHandler)
        /// Unary, answered on the I/O thread (see `InlineUnaryHandler` for the contract).
        case unaryInline(InlineUnaryHandler)
        case bidiStreaming(BidiStreamingHandler)

        /// Either unary kind as an async handler, for callers that run it in a task anyway.
        public var unaryHandler: UnaryHandler? {
            switch self {
            case .unary(let h): h
            case .unaryInline(let h): { request, context in try h(request, context) }
            case .bidiStreaming: nil
            }
        }
    }

    /// `/package.Service/Method`.
    public let path: String
    public let kind: Kind
    /// False for health and reflection: they answer without the bearer token.
    public let requiresAuth: Bool
    /// Position in the router that holds it (registration order), for per-method tables such
    /// as metrics series; -1 until registered.
    public internal(set) var routeIndex = -1
    /// True for a unary handler that never blocks its thread (no synchronous I/O, no waiting on
    /// a lock held across I/O, no long computation; awaiting is fine): its task runs on the
    /// connection's event loop and resumes there, saving the hop to the cooperative pool and
    /// back. A handler that blocks would stall every connection of that loop, so the default is
    /// false.
    public let runsOnEventLoop: Bool

    public init(service: String, method: String, requiresAuth: Bool = true, onEventLoop: Bool = false, kind: Kind) {
        self.path = "/\(service)/\(method)"
        self.kind = kind
        self.requiresAuth = requiresAuth
        self.runsOnEventLoop = onEventLoop
    }

    public var service: String {
        String(path.dropFirst().prefix { $0 != "/" })
    }
}

/// The method table: immutable once the server starts.
public struct RPCRouter: Sendable {
    /// Every method, by `routeIndex`.
    public private(set) var methodsByRouteIndex: [RPCMethod] = []
    /// Route indexes by path length, with the path bytes: a call is routed straight from the
    /// `:path` header bytes, without building a String or hashing it.
    private var byLength: [[(path: [UInt8], index: Int)]] = []
    private var declared: Set<String> = []

    public init(_ methods: [RPCMethod] = []) {
        for m in methods { register(m) }
    }

    public mutating func register(_ method: RPCMethod) {
        precondition(self.method(for: method.path) == nil, "method registered twice: \(method.path)")
        var method = method
        method.routeIndex = methodsByRouteIndex.count
        methodsByRouteIndex.append(method)
        let bytes = Array(method.path.utf8)
        while byLength.count <= bytes.count { byLength.append([]) }
        byLength[bytes.count].append((bytes, method.routeIndex))
    }

    public mutating func register(contentsOf list: [RPCMethod]) {
        for m in list { register(m) }
    }

    public func method(for path: String) -> RPCMethod? {
        var path = path
        return path.withUTF8 { method(path: $0) }
    }

    /// `method(for:)` on the raw `:path` bytes.
    public func method(path: UnsafeBufferPointer<UInt8>) -> RPCMethod? {
        guard path.count < byLength.count else { return nil }
        for entry in byLength[path.count] where entry.path.withUnsafeBufferPointer({ $0.elementsEqual(path) }) {
            return methodsByRouteIndex[entry.index]
        }
        return nil
    }

    /// Marks a service as part of this server's contract even while some (or all) of its
    /// methods have no handler yet: those answer "not implemented", not "unknown service".
    public mutating func declare(service: String) { declared.insert(service) }

    /// True when the service is registered or declared.
    public func knows(service: String) -> Bool { declared.contains(service) || methodsByRouteIndex.contains { $0.service == service } }

    /// Fully-qualified names of the services that have at least one registered method.
    public var serviceNames: [String] { Set(methodsByRouteIndex.map(\.service)).sorted() }

    public var allMethods: [RPCMethod] { methodsByRouteIndex.sorted { $0.path < $1.path } }
}
