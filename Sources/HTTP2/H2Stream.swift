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

    // Response bytes queued for the data source: `framePrefix` (the 5-byte gRPC frame header
    // of the message in `outbound`, when a message was queued alone), then `outbound` (that
    // message, framed messages, or an HTTP route's body). A message queued while nothing
    // waits is kept as it came, its header apart: no copy of it into a framed buffer.
    var framePrefix: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
    /// How much of `framePrefix` is still to go (5 down to 0).
    var framePrefixLeft = 0
    var outbound: [UInt8] = []
    var outboundOffset = 0
    /// A streaming handler's `send`, waiting for the client to read what is queued.
    var writeWaiter: CheckedContinuation<Void, any Error>?

    init(id: Int32, messageLimit: Int) {
        self.id = id
        self.deframer = GRPCDeframer(limit: messageLimit)
    }

    var pendingOutbound: Int { framePrefixLeft + outbound.count - outboundOffset }

    /// Queues an HTTP route's whole body (nothing else is queued on such a stream).
    func setBody(_ body: [UInt8]) {
        framePrefixLeft = 0
        outbound = body
        outboundOffset = 0
    }

    /// Queues one gRPC message (length-prefixed) behind whatever is pending.
    func queueMessage(_ message: [UInt8]) {
        guard pendingOutbound == 0 else { return GRPCWire.appendFrame(message, to: &outbound) }
        let n = UInt32(message.count)
        framePrefix = (0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF))
        framePrefixLeft = 5
        outbound = message
        outboundOffset = 0
    }

    /// Copies up to `buf.count` pending bytes into `buf` (the frame header first) and drops
    /// them from the queue. Returns how many.
    func takeOutbound(into buf: UnsafeMutableRawBufferPointer) -> Int {
        var copied = 0
        if framePrefixLeft > 0 {
            let k = min(framePrefixLeft, buf.count)
            withUnsafeBytes(of: framePrefix) { header in
                buf.baseAddress!.copyMemory(from: header.baseAddress! + (5 - framePrefixLeft), byteCount: k)
            }
            framePrefixLeft -= k
            copied = k
        }
        let n = min(buf.count - copied, outbound.count - outboundOffset)
        if n > 0 {
            outbound.withUnsafeBytes { src in
                (buf.baseAddress! + copied).copyMemory(from: src.baseAddress! + outboundOffset, byteCount: n)
            }
            outboundOffset += n
            copied += n
        }
        if framePrefixLeft == 0, outboundOffset == outbound.count, outboundOffset > 0 {
            outbound.removeAll(keepingCapacity: false)
            outboundOffset = 0
        }
        return copied
    }
}
