import RPC

/// One HTTP/2 stream: a gRPC call or an HTTP route. Owned by its `H2Connection`; loop thread
/// only. Where the stream is in its life is `machine` (see `GRPCStreamStateMachine`); this object
/// holds what the machine leaves outside: the request as its headers said it, the buffers, the
/// budget counts and the handler's task.
final class H2Stream {
    let id: Int32
    let started = ContinuousClock.now
    var machine = GRPCStreamStateMachine()

    /// Filled while headers arrive; read by the machine at END_HEADERS.
    var head = RequestHead()
    var deframer: GRPCDeframer
    /// A unary call's request message (the machine refuses a second one).
    var requestMessage: [UInt8]?
    /// An HTTP route's request body.
    var httpBody: [UInt8] = []
    /// Request bytes this stream holds against the connection's and the process's budgets:
    /// partial and complete messages, until the call ends (streaming calls: until taken).
    var held = 0
    /// Request bytes not yet given back to the peer's flow-control window (streaming calls
    /// give them back as the handler takes each message: back-pressure).
    var unconsumed = 0

    // The call, once accepted.
    var rpc: RPCMethod?
    var context: RPCContext?
    var task: Task<Void, Never>?
    /// Started only if the call is still open after the read that carried its headers (see
    /// `H2Connection.armPendingDeadlines`); the deadline itself is `context.deadline`.
    var deadlineTask: Task<Void, Never>?
    var inbound: AsyncStream<[UInt8]>.Continuation?

    // Response bytes queued for the data source (framed messages, or an HTTP route's body).
    var outbound: [UInt8] = []
    var outboundOffset = 0
    /// A streaming handler's `send`, waiting for the client to read what is queued.
    var writeWaiter: CheckedContinuation<Void, any Error>?

    init(id: Int32, messageLimit: Int) {
        self.id = id
        self.deframer = GRPCDeframer(limit: messageLimit)
    }

    var pendingOutbound: Int { outbound.count - outboundOffset }
}
