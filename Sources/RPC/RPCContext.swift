/// What a handler knows about the call it serves.
public struct RPCContext: Sendable {
    /// `/package.Service/Method`.
    public let path: String
    /// Request metadata (custom headers; pseudo-headers and transport headers excluded).
    public let metadata: Metadata
    /// When the caller stops waiting (`grpc-timeout`), if it said.
    public let deadline: ContinuousClock.Instant?
    /// Correlates log lines of one call (`x-request-id` from the caller, else generated).
    public let requestID: String
    /// The remote address, `ip:port`.
    public let peer: String

    public init(path: String, metadata: Metadata, deadline: ContinuousClock.Instant?, requestID: String, peer: String) {
        self.path = path
        self.metadata = metadata
        self.deadline = deadline
        self.requestID = requestID
        self.peer = peer
    }
}
