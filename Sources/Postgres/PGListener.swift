import Dispatch
import Glibc
import RPC
import Synchronization

/// A dedicated connection that `LISTEN`s on one channel and calls `wake` whenever a `NOTIFY`
/// arrives — and once after every (re)connect, because notifications sent while it was away are
/// lost: the listener is a wake-up, the table it guards stays the truth. It runs on its own
/// dispatch queue (blocking libpq), reconnects with back-off (100 ms doubling to 5 s), and holds
/// one connection and nothing per notification (libpq's queue is drained as it is read).
public final class PGListener: Sendable {
    public enum Wake: Sendable, Equatable { case connected, notified(Int) }

    private let url: String
    private let channel: String
    private let options: PGConnectionOptions
    private let logger: Logger
    private let wake: @Sendable (Wake) -> Void
    private let queue = DispatchQueue(label: "pixtrack.pg-listener")
    private let stopped = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    private let connectedNow = Atomic<Bool>(false)
    private let reconnects = Atomic<Int>(0)

    /// - Parameter channel: a plain identifier (letters, digits, `_`); it is quoted into `LISTEN`.
    public init(url: String, channel: String, options: PGConnectionOptions = PGConnectionOptions(), logger: Logger,
                wake: @escaping @Sendable (Wake) -> Void) {
        precondition(!channel.isEmpty && channel.utf8.allSatisfy { $0 == 0x5F || ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) },
                     "channel must be a lowercase identifier")
        var options = options
        options.applicationName = options.applicationName + "-listen"
        options.statementTimeout = .seconds(5)
        self.url = url
        self.channel = channel
        self.options = options
        self.logger = logger
        self.wake = wake
    }

    /// True while the LISTEN connection is up.
    public var isConnected: Bool { connectedNow.load(ordering: .relaxed) }
    /// Connections made after the first (the connection was lost that many times).
    public var reconnectCount: Int { reconnects.load(ordering: .relaxed) }

    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        queue.async { [self] in run() }
    }

    /// Stops within about 250 ms (the wait's slice); the connection is closed.
    public func stop() { stopped.store(true, ordering: .relaxed) }

    private func run() {
        var backoffMs: UInt32 = 100
        var first = true
        var lastError = ""
        while !stopped.load(ordering: .relaxed) {
            let connection: PGConnection
            do {
                connection = try PGConnection.connect(url: url, options: options)
                try connection.execute("LISTEN \"\(channel)\"")
            } catch {
                let text = String(describing: error)
                if text != lastError { logger.warning("pg_listen_failed", ("channel", channel), ("error", text)) }
                lastError = text
                usleep(backoffMs * 1000)
                backoffMs = min(backoffMs * 2, 5000)
                continue
            }
            if !first { reconnects.add(1, ordering: .relaxed); logger.info("pg_listen_reconnected", ("channel", channel)) }
            first = false
            lastError = ""
            backoffMs = 100
            connectedNow.store(true, ordering: .relaxed)
            wake(.connected)
            while !stopped.load(ordering: .relaxed) {
                do {
                    let n = try connection.waitForNotifications(timeoutMs: 250)
                    if n > 0 { wake(.notified(n)) }
                } catch {
                    logger.warning("pg_listen_lost", ("channel", channel), ("error", String(describing: error)))
                    break
                }
            }
            connectedNow.store(false, ordering: .relaxed)
            connection.close()
        }
    }
}
