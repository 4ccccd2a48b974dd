import Synchronization

/// The calls of one method on one transport: counts by status code and a latency histogram,
/// kept in relaxed atomic counters, so event loops on several cores record calls without a
/// lock, a hash or contention. A scrape reads each counter once; a call finishing during the
/// scrape may show in one figure and not yet in another, never lost.
public final class CallSeries: Sendable {
    public let method: String
    public let transport: String
    /// By `RPCCode.rawValue`.
    private let codes: InlineArray<17, Atomic<UInt64>>
    /// Calls whose latency fell in bucket i (`Metrics.latencyBuckets`, not cumulative); the
    /// last entry is above every bound (+Inf).
    private let buckets: InlineArray<15, Atomic<UInt64>>
    private let sumNanos = Atomic<UInt64>(0)

    init(method: String, transport: String) {
        precondition(Metrics.latencyBuckets.count == 14 && RPCCode.allCases.count == 17)
        self.method = method
        self.transport = transport
        codes = InlineArray { _ in Atomic(0) }
        buckets = InlineArray { _ in Atomic(0) }
    }

    public func record(_ code: RPCCode, seconds: Double) {
        codes[code.rawValue].add(1, ordering: .relaxed)
        var i = 0
        while i < Metrics.latencyBuckets.count && seconds > Metrics.latencyBuckets[i] { i += 1 }
        buckets[i].add(1, ordering: .relaxed)
        let nanos = seconds.isFinite && seconds > 0 ? UInt64(min(seconds, 1e9) * 1e9) : 0
        sumNanos.add(nanos, ordering: .relaxed)
    }

    struct Snapshot {
        let method: String
        let transport: String
        var codes: [UInt64]
        var buckets: [UInt64]
        var sumNanos: UInt64
        /// The histogram's count: the sum of its buckets (consistent with them by construction).
        var count: UInt64 { buckets.reduce(0, +) }
    }

    func snapshot() -> Snapshot {
        let c = (0..<17).map { codes[$0].load(ordering: .relaxed) }
        let b = (0..<15).map { buckets[$0].load(ordering: .relaxed) }
        return Snapshot(method: method, transport: transport, codes: c, buckets: b,
                        sumNanos: sumNanos.load(ordering: .relaxed))
    }
}
