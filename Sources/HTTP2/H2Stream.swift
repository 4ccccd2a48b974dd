import RPC

/// One HTTP/2 stream carrying one gRPC call. Owned by its `H2Connection`; loop thread only.
final class H2Stream {
    let id: Int32
    let started = ContinuousClock.now

    // Request side, filled while headers arrive.
    var isPOST = false
    var authority = ""
    /// The request method when it is not POST (for the error message).
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
    var headersTooLarge = false
    /// A metadata key whose value is not printable ASCII (the gRPC spec's ASCII-Value).
    var invalidMetadataKey: String?
    var deframer: GRPCDeframer
    var requestMessages: [[UInt8]] = []
    var requestEnded = false
    /// An HTTP route over HTTP/2 (not gRPC): the request as the routes see it.
    var isHTTP = false
    /// Every header as sent, for requests that may be HTTP routes (not POST, or an unknown path):
    /// a gRPC call never pays for it.
    var rawHeaders: [(name: String, value: String)]?
    /// `:path` with its query, when `rawHeaders` are kept.
    var target = ""
    var httpBody: [UInt8] = []
    /// The response ends with the last DATA frame (no trailers): an HTTP route's answer.
    var endsWithData = false
    /// END_HEADERS arrived (a stream still without it after the header timeout is a slow client).
    var headersDone = false
    /// Request bytes this stream holds against the connection's and the process's budgets:
    /// partial and complete messages, until the call ends (streaming calls: until taken).
    var held = 0
    /// Request bytes not yet given back to the peer's flow-control window (streaming calls
    /// give them back as the handler takes each message: back-pressure).
    var unconsumed = 0

    // The call.
    var rpc: RPCMethod?
    var context: RPCContext?
    var task: Task<Void, Never>?
    /// Started only if the call is still open after the read that carried its headers (see
    /// `H2Connection.deadlineAfterThisRead`); the deadline itself is `context.deadline`.
    var deadlineTask: Task<Void, Never>?
    var inbound: AsyncStream<[UInt8]>.Continuation?

    // Response side.
    var responseStarted = false
    /// The final status is decided (sent or queued); nothing more is answered.
    var answered = false
    var outbound: [UInt8] = []
    var outboundOffset = 0
    var trailers: (code: RPCCode, message: String)?
    /// The data source returned `NGHTTP2_ERR_DEFERRED`; new output needs `resume_data`.
    var deferred = false
    var finalCode: RPCCode?
    /// A streaming handler's `send`, waiting for the client to read what is queued.
    var writeWaiter: CheckedContinuation<Void, any Error>?

    init(id: Int32, messageLimit: Int) {
        self.id = id
        self.deframer = GRPCDeframer(limit: messageLimit)
    }

    var pendingOutbound: Int { outbound.count - outboundOffset }
}
