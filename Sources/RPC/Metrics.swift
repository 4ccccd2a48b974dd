import Synchronization

/// Process metrics in the Prometheus text format: counters and histograms with labels, plus
/// gauges read at scrape time. Families are declared on first use with their help text.
public final class Metrics: Sendable {
    public typealias Labels = [(String, String)]

    private struct Key: Hashable {
        let name: String
        let labels: [String]  // names and values alternating, declaration order; escaped at render
    }

    private struct Histogram {
        var buckets: [Double]
        var counts: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0
    }

    private struct SeriesKey: Hashable {
        let method: String
        let transport: String
    }

    private struct State {
        var calls: [SeriesKey: CallSeries] = [:]
        var help: [String: (type: String, help: String)] = [:]
        var order: [String] = []
        var counters: [Key: Double] = [:]
        /// Series counted through a `Counter` handle; rendered together with `counters`.
        var handles: [Key: Counter] = [:]
        var histograms: [Key: Histogram] = [:]
        var gauges: [String: @Sendable () -> [(Labels, Double)]] = [:]
    }

    /// Latency buckets in seconds: 0.5 ms … 10 s.
    public static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    private let state = Mutex(State())

    public init() {}

    private static func declare(_ s: inout State, _ name: String, _ type: String, _ help: String) {
        if s.help[name] == nil {
            s.help[name] = (type, help)
            s.order.append(name)
        }
    }

    private static func key(_ name: String, _ labels: Labels) -> Key {
        var flat: [String] = []
        flat.reserveCapacity(labels.count * 2)
        for (k, v) in labels { flat.append(k); flat.append(v) }
        return Key(name: name, labels: flat)
    }

    public func increment(_ name: String, help: String, labels: Labels = [], by amount: Double = 1) {
        state.withLock { s in
            Self.declare(&s, name, "counter", help)
            s.counters[Self.key(name, labels), default: 0] += amount
        }
    }

    /// The handle of one counter series, created on first use: a hot path keeps it and counts
    /// with one relaxed atomic add (no lock, no hash, no allocation per event). The series is
    /// the same one `increment` with this name and these labels adds to.
    public func counter(_ name: String, help: String, labels: Labels = []) -> Counter {
        state.withLock { s in
            Self.declare(&s, name, "counter", help)
            let k = Self.key(name, labels)
            if let c = s.handles[k] { return c }
            let c = Counter()
            s.handles[k] = c
            return c
        }
    }

    public func observe(_ name: String, help: String, labels: Labels = [], value: Double, buckets: [Double] = Metrics.latencyBuckets) {
        state.withLock { s in
            Self.declare(&s, name, "histogram", help)
            let k = Self.key(name, labels)
            var h = s.histograms[k] ?? Histogram(buckets: buckets, counts: Array(repeating: 0, count: buckets.count))
            for (i, b) in h.buckets.enumerated() where value <= b { h.counts[i] += 1 }
            h.sum += value
            h.count += 1
            s.histograms[k] = h
        }
    }

    /// A gauge whose samples are read at scrape time.
    public func gauge(_ name: String, help: String, read: @escaping @Sendable () -> [(Labels, Double)]) {
        state.withLock { s in
            Self.declare(&s, name, "gauge", help)
            s.gauges[name] = read
        }
    }

    /// The call counters of one method on one transport, created on first use. Transports keep
    /// the handle and record every call on it without a lock or a lookup.
    public func calls(method: String, transport: String) -> CallSeries {
        state.withLock { s in
            let key = SeriesKey(method: method, transport: transport)
            if let series = s.calls[key] { return series }
            let series = CallSeries(method: method, transport: transport)
            s.calls[key] = series
            return series
        }
    }

    /// One finished RPC: `pixtrack_rpc_calls_total{method,code,transport}` and the latency
    /// histogram. Looks the series up each time; hot paths keep `calls(method:transport:)`.
    public func recordCall(method: String, code: RPCCode, seconds: Double, transport: String) {
        calls(method: method, transport: transport).record(code, seconds: seconds)
    }

    private static func renderCalls(_ series: [CallSeries]) -> String {
        let snapshots = series.map { $0.snapshot() }
        var out = "# HELP pixtrack_rpc_calls_total RPCs finished, by method, status code and transport.\n# TYPE pixtrack_rpc_calls_total counter\n"
        var lines: [(String, Int, String, UInt64)] = []
        for s in snapshots {
            for (code, n) in s.codes.enumerated() where n > 0 { lines.append((s.method, code, s.transport, n)) }
        }
        for (method, code, transport, n) in lines.sorted(by: { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }) {
            out += "pixtrack_rpc_calls_total{method=\"\(escape(method))\",code=\"\(RPCCode(rawValue: code)!.name)\",transport=\"\(transport)\"} \(n)\n"
        }
        // Histograms by method, all transports together; buckets made cumulative here.
        var byMethod: [String: CallSeries.Snapshot] = [:]
        for s in snapshots {
            guard var m = byMethod[s.method] else { byMethod[s.method] = s; continue }
            m.sumNanos &+= s.sumNanos
            for i in m.buckets.indices { m.buckets[i] += s.buckets[i] }
            byMethod[s.method] = m
        }
        out += "# HELP pixtrack_rpc_duration_seconds RPC latency from request headers to final status.\n# TYPE pixtrack_rpc_duration_seconds histogram\n"
        for (method, h) in byMethod.sorted(by: { $0.key < $1.key }) where h.count > 0 {
            let m = escape(method)
            var cumulative: UInt64 = 0
            for (i, b) in latencyBuckets.enumerated() {
                cumulative += h.buckets[i]
                out += "pixtrack_rpc_duration_seconds_bucket{method=\"\(m)\",le=\"\(format(b))\"} \(cumulative)\n"
            }
            out += "pixtrack_rpc_duration_seconds_bucket{method=\"\(m)\",le=\"+Inf\"} \(h.count)\n"
            out += "pixtrack_rpc_duration_seconds_sum{method=\"\(m)\"} \(format(Double(h.sumNanos) / 1e9))\n"
            out += "pixtrack_rpc_duration_seconds_count{method=\"\(m)\"} \(h.count)\n"
        }
        return out
    }

    /// The Prometheus text exposition (version 0.0.4).
    public func render() -> String {
        let (s, gauges) = state.withLock { s in (s, s.gauges) }
        var out = Self.renderCalls(Array(s.calls.values))
        for name in s.order {
            guard let meta = s.help[name] else { continue }
            out += "# HELP \(name) \(meta.help)\n# TYPE \(name) \(meta.type)\n"
            switch meta.type {
            case "counter":
                var series = s.counters.filter { $0.key.name == name }
                for (k, c) in s.handles where k.name == name { series[k, default: 0] += Double(c.value) }
                for (k, v) in series { out += "\(name)\(Self.braces(k.labels)) \(Self.format(v))\n" }
            case "histogram":
                for (k, h) in s.histograms where k.name == name {
                    // counts[i] is already cumulative: observe() adds to every bucket >= value.
                    for (i, b) in h.buckets.enumerated() {
                        out += "\(name)_bucket\(Self.braces(k.labels, "le=\"\(Self.format(b))\"")) \(h.counts[i])\n"
                    }
                    out += "\(name)_bucket\(Self.braces(k.labels, "le=\"+Inf\"")) \(h.count)\n"
                    out += "\(name)_sum\(Self.braces(k.labels)) \(Self.format(h.sum))\n"
                    out += "\(name)_count\(Self.braces(k.labels)) \(h.count)\n"
                }
            default:
                for (labels, v) in gauges[name]?() ?? [] {
                    out += "\(name)\(Self.braces(Self.key(name, labels).labels)) \(Self.format(v))\n"
                }
            }
        }
        return out
    }

    private static func braces(_ flat: [String], _ extra: String? = nil) -> String {
        var parts: [String] = []
        var i = 0
        while i + 1 < flat.count {
            parts.append("\(flat[i])=\"\(escape(flat[i + 1]))\"")
            i += 2
        }
        if let extra { parts.append(extra) }
        return parts.isEmpty ? "" : "{" + parts.joined(separator: ",") + "}"
    }

    private static func format(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    private static func escape(_ v: String) -> String {
        guard v.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else { return v }
        var out = ""
        for c in v.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// One counter series held by its user (`Metrics.counter`): a relaxed atomic, read at scrape.
public final class Counter: Sendable {
    private let count = Atomic<UInt64>(0)

    public func increment(by amount: UInt64 = 1) { count.add(amount, ordering: .relaxed) }

    var value: UInt64 { count.load(ordering: .relaxed) }
}

/// The series of one counter that differ in one label whose values are known up front (a
/// result, an outcome): their handles made once, found by a short linear search on each event.
/// A value not listed still counts, through `Metrics.counter`.
public struct CounterFamily: Sendable {
    private let metrics: Metrics
    private let name: String
    private let help: String
    private let label: String
    private let known: [(value: String, counter: Counter)]

    public init(_ metrics: Metrics, _ name: String, help: String, label: String, values: [String]) {
        self.metrics = metrics
        self.name = name
        self.help = help
        self.label = label
        known = values.map { ($0, metrics.counter(name, help: help, labels: [(label, $0)])) }
    }

    public func increment(_ value: String) {
        for k in known where k.value == value { return k.counter.increment() }
        metrics.counter(name, help: help, labels: [(label, value)]).increment()
    }
}
