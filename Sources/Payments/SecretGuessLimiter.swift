import Synchronization

/// Bounds how fast one client can guess webhook secrets: after `limit` wrong secrets within
/// `windowMs`, that address is answered 429 until the window ends. The table is bounded too
/// (`maxAddresses`, oldest windows dropped first), so a spray from many addresses costs memory
/// only up to that bound. Thread-safe.
public final class SecretGuessLimiter: Sendable {
    struct Window { var startedMs: Int64; var failures: Int }

    public let limit: Int
    public let windowMs: Int64
    public let maxAddresses: Int
    private let now: @Sendable () -> Int64
    private let table = Mutex<[String: Window]>([:])

    public init(limit: Int = 10, windowMs: Int64 = 60_000, maxAddresses: Int = 10_000,
                now: @escaping @Sendable () -> Int64 = { SecretGuessLimiter.monotonicMs() }) {
        self.limit = limit
        self.windowMs = windowMs
        self.maxAddresses = maxAddresses
        self.now = now
    }

    /// False while `address` has spent its wrong guesses for the current window.
    public func allows(_ address: String) -> Bool {
        let t = now()
        return table.withLock { m in
            guard let w = m[address] else { return true }
            if t - w.startedMs >= windowMs { m[address] = nil; return true }
            return w.failures < limit
        }
    }

    /// Records one wrong secret from `address`.
    public func failed(_ address: String) {
        let t = now()
        table.withLock { m in
            if var w = m[address], t - w.startedMs < windowMs {
                w.failures += 1
                m[address] = w
                return
            }
            if m.count >= maxAddresses {
                m = m.filter { t - $0.value.startedMs < windowMs }
                if m.count >= maxAddresses, let oldest = m.min(by: { $0.value.startedMs < $1.value.startedMs })?.key {
                    m[oldest] = nil
                }
            }
            m[address] = Window(startedMs: t, failures: 1)
        }
    }

    /// Addresses tracked right now (never more than `maxAddresses`).
    var trackedAddresses: Int { table.withLock { $0.count } }

    private static let epoch = ContinuousClock.now

    /// Milliseconds on the monotonic clock (since the first use).
    public static func monotonicMs() -> Int64 {
        let d = epoch.duration(to: .now)
        return d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }
}
