import Postgres

/// Where the sender finds a pixel's Conversions API access token. Asked on the sender's own
/// database connection, inside its transaction (so a lookup is one more statement, no extra
/// connection). The token is a secret: implementations never log it.
public protocol MetaAccessTokenSource: Sendable {
    /// The token for `pixelID`, nil when none is configured (the events are then parked).
    /// - Throws: `MetaAccessTokenUnusable` when a token is stored but cannot be used (it does not
    ///   decrypt): the events are parked with its message, nothing is sent.
    func accessToken(pixelID: String, connection: PGConnection) throws -> String?
}

/// A stored token that cannot be used; `message` names the reason, never the token.
public struct MetaAccessTokenUnusable: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Fixed tokens by pixel id: for tests and single-pixel set-ups.
public struct StaticMetaAccessTokens: MetaAccessTokenSource {
    private let tokens: [String: String]
    public init(_ tokens: [String: String]) { self.tokens = tokens }
    public func accessToken(pixelID: String, connection: PGConnection) throws -> String? { tokens[pixelID] }
}
