import RPC

/// The HTTP/1.1 route table: `GET /healthz`, `GET /go/{slug}`, `POST /webhooks/{gateway}/{secret}`…
/// Patterns are literal segments or `{name}` captures (one whole segment each).
public struct HTTPRoutes: Sendable {
    public typealias Handler = @Sendable (_ request: HTTPRequest, _ params: [String: String]) async -> HTTPResponse

    private struct Route: Sendable {
        let method: String
        let pattern: String
        let segments: [Substring]
        let handler: Handler
        let onEventLoop: Bool
    }

    private var routes: [Route] = []
    /// Answers requests no route matched whose path looks like an RPC (`/pkg.Service/Method`).
    private var fallback: HTTPHandler?

    public init() {}

    /// - Parameter onEventLoop: true for a handler that never blocks its thread (see
    ///   `RPCMethod.runsOnEventLoop`): it runs on the connection's event loop. The others move to
    ///   the global executor before they start.
    public mutating func add(_ method: String, _ pattern: String, onEventLoop: Bool = false, _ handler: @escaping Handler) {
        routes.append(Route(method: method, pattern: pattern, segments: pattern.split(separator: "/"), handler: handler,
                            onEventLoop: onEventLoop))
    }

    /// Only the routes named `"METHOD /pattern"` (exactly as added), without the RPC fallback:
    /// the table of a listener that faces the internet. Every other path answers 404.
    public func restricted(to allowed: Set<String>) -> HTTPRoutes {
        var t = HTTPRoutes()
        t.routes = routes.filter { allowed.contains("\($0.method) \($0.pattern)") }
        return t
    }

    public mutating func fallback(_ handler: @escaping HTTPHandler) { fallback = handler }

    /// The handler the server calls for every HTTP/1.1 request.
    public var handler: HTTPHandler {
        let table = self
        return { request in await table.route(request) }
    }

    func route(_ request: HTTPRequest) async -> HTTPResponse {
        let parts = Self.segments(request.path)
        var pathMatched = false
        for r in routes {
            guard r.segments.count == parts.count, let params = Self.match(r.segments, parts) else { continue }
            pathMatched = true
            if r.method == request.method || (r.method == "GET" && request.method == "HEAD") {
                var response = r.onEventLoop ? await r.handler(request, params)
                    : await withTaskExecutorPreference(globalConcurrentExecutor) { await r.handler(request, params) }
                if request.method == "HEAD" { response.body = [] }
                return response
            }
        }
        if let fallback, !pathMatched, parts.count == 2, parts.first!.contains("."), !parts.last!.isEmpty {
            return await withTaskExecutorPreference(globalConcurrentExecutor) { await fallback(request) }
        }
        if pathMatched { return .jsonError(405, code: "unimplemented", message: "\(request.method) is not allowed on \(request.path)") }
        return .jsonError(404, code: "not_found", message: "no route for \(request.method) \(request.path)")
    }

    /// The path's segments after its first `/` (what `split(separator: "/")` keeps, empty
    /// segments included, without its first part), in one array sized up front.
    static func segments(_ path: String) -> [Substring] {
        var parts: [Substring] = []
        parts.reserveCapacity(8)
        let u = path.utf8
        guard var start = u.firstIndex(of: UInt8(ascii: "/")).map({ u.index(after: $0) }) else { return parts }
        var i = start
        while i < u.endIndex {
            if u[i] == UInt8(ascii: "/") {
                parts.append(path[start..<i])
                start = u.index(after: i)
            }
            i = u.index(after: i)
        }
        parts.append(path[start..<u.endIndex])
        return parts
    }

    static func match(_ pattern: [Substring], _ path: [Substring]) -> [String: String]? {
        guard pattern.count == path.count else { return nil }
        var params: [String: String] = [:]
        for (p, s) in zip(pattern, path) {
            if p.hasPrefix("{") && p.hasSuffix("}") {
                guard !s.isEmpty, let decoded = percentDecode(s) else { return nil }
                params[String(p.dropFirst().dropLast())] = decoded
            } else if p != s {
                return nil
            }
        }
        return params
    }

    /// Decodes `%XX` escapes of one path segment; nil when malformed or not UTF-8.
    static func percentDecode(_ s: Substring) -> String? {
        if !s.utf8.contains(UInt8(ascii: "%")) { return String(s) }  // most segments: nothing to decode
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
