import JSONKit

/// A complete HTTP/1.1 request as the side door hands it to routes (body fully read).
public struct HTTPRequest: Sendable {
    public var method: String
    /// The request target as sent: path plus optional `?query`.
    public var target: String
    /// Header names lowercased, in arrival order.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// The TCP peer, `ip:port`.
    public var peer: String

    public init(method: String, target: String, headers: [(name: String, value: String)], body: [UInt8], peer: String) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.peer = peer
    }

    public var path: String { String(target.prefix { $0 != "?" }) }

    public var query: String? {
        guard let i = target.firstIndex(of: "?") else { return nil }
        return String(target[target.index(after: i)...])
    }

    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.name == n }?.value
    }
}

/// What a route answers.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: [("content-type", contentType)], body: Array(text.utf8))
    }

    /// `{"code":"…","message":"…"}`, the shape of every side-door error.
    public static func jsonError(_ status: Int, code: String, message: String) -> HTTPResponse {
        let body = JSON.object(["code": .string(code), "message": .string(message)]).bytes
        return HTTPResponse(status: status, headers: [("content-type", "application/json")], body: body)
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 204: "No Content"
        case 302: "Found"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 499: "Client Closed Request"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Status"
        }
    }
}

/// Answers HTTP/1.1 requests (routes live above the transport).
public typealias HTTPHandler = @Sendable (HTTPRequest) async -> HTTPResponse
