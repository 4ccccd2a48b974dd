import SystemCalls
import CSystemShims
import Glibc
import Synchronization
import RPC
import TLS

/// Process-wide counters the server keeps (exported by /metrics later).
public final class ServerCounters: Sendable {
    public let calls = Atomic<Int>(0)
    public let inFlight = Atomic<Int>(0)
    public let connections = Atomic<Int>(0)
    public let protocolErrors = Atomic<Int>(0)
    /// Request bytes held for every connection (buffered messages, messages of running calls).
    public let bufferedBytes = Atomic<Int>(0)
    /// Streams refused with RESOURCE_EXHAUSTED because a buffer budget was spent.
    public let budgetRefusals = Atomic<Int>(0)
    /// Connections refused at accept: over `maxConnections`, over `maxConnectionsPerIP`.
    public let refusedOverLimit = Atomic<Int>(0)
    public let refusedPerIP = Atomic<Int>(0)
    /// HTTP/2 connections closed for sending no complete headers in time, or idling.
    public let closedHeaderTimeout = Atomic<Int>(0)
    public let closedIdle = Atomic<Int>(0)
    /// TLS handshakes completed, by the ALPN protocol chosen, and handshakes that failed.
    public let tlsHandshakesH2 = Atomic<Int>(0)
    public let tlsHandshakesHTTP1 = Atomic<Int>(0)
    public let tlsHandshakesNoALPN = Atomic<Int>(0)
    public let tlsHandshakeFailures = Atomic<Int>(0)
    public init() {}

    func tlsHandshake(alpn: String) {
        switch alpn {
        case "h2": tlsHandshakesH2.add(1, ordering: .relaxed)
        case "http/1.1": tlsHandshakesHTTP1.add(1, ordering: .relaxed)
        default: tlsHandshakesNoALPN.add(1, ordering: .relaxed)
        }
    }
}

/// What every connection shares: configuration, the dispatcher and the counters.
final class ServerCore: Sendable {
    let config: HTTP2Server.Configuration
    let logger: Logger
    let dispatcher: CallDispatcher
    let counters: ServerCounters
    let httpHandler: HTTPHandler?
    /// What the public listener answers over HTTP/1.1 (no RPCs are served there at all).
    let publicHTTPHandler: HTTPHandler?

    init(config: HTTP2Server.Configuration, router: RPCRouter, httpHandler: HTTPHandler?, publicHTTPHandler: HTTPHandler?,
         logger: Logger, metrics: Metrics, counters: ServerCounters) {
        self.config = config
        self.httpHandler = httpHandler
        self.publicHTTPHandler = publicHTTPHandler
        self.logger = logger
        self.counters = counters
        self.dispatcher = CallDispatcher(router: router, config: config, logger: logger, counters: counters, metrics: metrics)
    }

    /// Open connections per client address (trusted proxies are not counted). Accepts happen on
    /// loop 0, closes on any loop.
    private let perAddress = Mutex<[String: Int]>([:])

    /// Counts a new connection from `address`; false (nothing counted) when a limit is reached.
    func admit(address: String) -> Bool {
        let limit = config.maxConnections > 0 ? config.maxConnections : Self.defaultMaxConnections
        if counters.connections.load(ordering: .relaxed) >= limit {
            counters.refusedOverLimit.add(1, ordering: .relaxed)
            return false
        }
        if !config.exemptFromPerIPLimit(address) {
            let admitted = perAddress.withLock { m -> Bool in
                let n = m[address, default: 0]
                guard n < config.maxConnectionsPerIP else { return false }
                m[address] = n + 1
                return true
            }
            guard admitted else {
                counters.refusedPerIP.add(1, ordering: .relaxed)
                return false
            }
        }
        counters.connections.add(1, ordering: .relaxed)
        return true
    }

    func connectionClosed(peerAddress: String) {
        counters.connections.subtract(1, ordering: .relaxed)
        if !config.exemptFromPerIPLimit(peerAddress) {
            perAddress.withLock { m in
                let n = m[peerAddress, default: 1] - 1
                m[peerAddress] = n > 0 ? n : nil
            }
        }
    }

    /// The file descriptor limit, less room for the database, Redis, plugins and logs.
    static let defaultMaxConnections: Int = {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 1000 }
        let soft = rl.rlim_cur > 1 << 20 ? 1 << 20 : Int(rl.rlim_cur)  // RLIM_INFINITY included
        return max(16, soft - 256)
    }()
}

/// The gRPC server: one listening socket, `eventLoops` epoll threads, nghttp2 sessions.
public final class HTTP2Server: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (see the return value of `start()`).
        public var port = 50051
        /// A second listener for the internet-facing HTTP routes only (`publicHTTPHandler`); gRPC
        /// and everything not in that table answer 404 there. Nil: none. 0 picks a free port.
        public var publicPort: Int?
        /// Empty: the same address as `host`.
        public var publicHost = ""
        public var maxMessageBytes = 4 << 20
        /// Request messages of methods that never need authentication (health, reflection):
        /// anyone may call them, so they get a small limit.
        public var maxUnauthenticatedMessageBytes = 64 << 10
        /// Per connection: request bytes held (partial and complete messages, and the messages
        /// of calls still running). A stream whose data would pass it is answered
        /// RESOURCE_EXHAUSTED; the rest of the connection goes on.
        public var maxConnectionBufferBytes = 8 << 20
        /// The same, over every connection of the process.
        public var maxBufferBytes = 256 << 20
        /// A streaming call's response bytes queued for a client that is not reading, past which
        /// the handler's `send` waits (back-pressure) instead of queueing more.
        public var streamWriteHighWater = 256 << 10
        /// Open connections at once (0: from the process's file descriptor limit) and per client
        /// address; `exemptFromPerIPLimit` names addresses (trusted proxies) that are not counted.
        public var maxConnections = 0
        public var maxConnectionsPerIP = 256
        public var exemptFromPerIPLimit: @Sendable (String) -> Bool = { _ in false }
        public var maxConcurrentStreams = 100
        /// Both listeners speak TLS (ALPN `h2`, `http/1.1`) with this store's current
        /// certificate; nil: plaintext (h2c and HTTP/1.1).
        public var tls: TLSContextStore?
        public var maxHeaderListBytes = 16 << 10
        /// Per connection: past this many unsent bytes we stop reading from the peer.
        public var maxOutboundBuffer = 4 << 20
        public var eventLoops = 2
        /// False: every handler task runs on the cooperative pool, also those of methods and
        /// routes marked to run on the event loop (`RPCMethod.runsOnEventLoop`).
        public var handlersOnEventLoop = true
        /// When set, methods with `requiresAuth` need `authorization: Bearer <token>`.
        public var authToken: String?
        /// HTTP/1.1 request limits (headers → 431, body → 413).
        public var http1Limits = HTTP1Limits()
        public var timeouts = Timeouts()
        public init() {}
    }

    public struct HTTP1Limits: Sendable {
        public var maxHeaderBytes = 16 << 10
        public var maxBodyBytes = 4 << 20
        public init() {}
    }

    /// Slow-peer protection (slowloris) and idle keep-alive.
    public struct Timeouts: Sendable {
        /// From a connection's or request's first byte to the end of its headers.
        public var headerRead: Duration = .seconds(10)
        /// From the first byte of a request to the end of its body.
        public var bodyRead: Duration = .seconds(30)
        /// A connection with nothing in flight (HTTP/1.1: no request; HTTP/2: no open stream) is
        /// closed after this (HTTP/2: with a GOAWAY).
        public var idle: Duration = .seconds(60)
        /// A connection with open streams and nothing read for this long gets a PING; no answer
        /// within another interval closes it (dead peers of long watch streams).
        public var keepalive: Duration = .seconds(30)
        public init() {}
    }

    private let core: ServerCore
    private let loops: [EventLoop]
    private let listeners = Mutex<[Listener]>([])
    private let publicPortBound = Atomic<Int>(0)

    /// The public listener's port once `start()` returned (0 when there is none).
    public var publicPort: Int { publicPortBound.load(ordering: .relaxed) }

    public var counters: ServerCounters { core.counters }

    /// `httpHandler` answers HTTP/1.1 requests on the same port (nil: every one gets 404).
    /// `publicHTTPHandler` answers HTTP/1.1 on the public listener (`Configuration.publicPort`).
    public init(configuration: Configuration, router: RPCRouter, httpHandler: HTTPHandler? = nil,
                publicHTTPHandler: HTTPHandler? = nil,
                logger: Logger, metrics: Metrics = Metrics(), counters: ServerCounters = ServerCounters()) throws {
        core = ServerCore(config: configuration, router: router, httpHandler: httpHandler, publicHTTPHandler: publicHTTPHandler,
                          logger: logger, metrics: metrics, counters: counters)
        metrics.gauge("pixtrack_rpc_in_flight", help: "gRPC calls started and not yet answered.") {
            [([], Double(counters.inFlight.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_connections_open", help: "Open TCP connections (HTTP/2 and HTTP/1.1).") {
            [([], Double(counters.connections.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_http2_protocol_errors_total", help: "Connections ended by an HTTP/2 protocol error.") {
            [([], Double(counters.protocolErrors.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_request_buffer_bytes", help: "Request bytes held for open calls, all connections.") {
            [([], Double(counters.bufferedBytes.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_request_buffer_refusals_total", help: "Streams answered RESOURCE_EXHAUSTED: a request buffer budget was spent.") {
            [([], Double(counters.budgetRefusals.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_connections_refused_total", help: "Connections closed at accept, by the limit they hit.") {
            [([("limit", "max_connections")], Double(counters.refusedOverLimit.load(ordering: .relaxed))),
             ([("limit", "per_ip")], Double(counters.refusedPerIP.load(ordering: .relaxed)))]
        }
        if configuration.tls != nil {
            metrics.gauge("pixtrack_tls_handshakes_total", help: "TLS handshakes completed, by the protocol ALPN chose.") {
                [([("alpn", "h2")], Double(counters.tlsHandshakesH2.load(ordering: .relaxed))),
                 ([("alpn", "http/1.1")], Double(counters.tlsHandshakesHTTP1.load(ordering: .relaxed))),
                 ([("alpn", "none")], Double(counters.tlsHandshakesNoALPN.load(ordering: .relaxed)))]
            }
            metrics.gauge("pixtrack_tls_handshake_failures_total", help: "TLS handshakes that failed (bad hello, no common version or cipher, not TLS).") {
                [([], Double(counters.tlsHandshakeFailures.load(ordering: .relaxed)))]
            }
        }
        metrics.gauge("pixtrack_connections_timed_out_total", help: "HTTP/2 connections closed by the server, by reason.") {
            [([("reason", "header_timeout")], Double(counters.closedHeaderTimeout.load(ordering: .relaxed))),
             ([("reason", "idle")], Double(counters.closedIdle.load(ordering: .relaxed)))]
        }
        Self.raiseDescriptorLimit()
        loops = try (0..<max(1, configuration.eventLoops)).map { try EventLoop(index: $0) }
    }

    /// Lifts the soft file descriptor limit to the hard one (1024 by default on Debian, far
    /// below what a public server needs); connection limits derive from it.
    static func raiseDescriptorLimit() {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rl.rlim_max else { return }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }

    /// Binds, starts the loops and returns the bound port.
    public func start() throws -> Int {
        let (fd, port) = try Self.bind(host: core.config.host, port: core.config.port)
        var bound = [(fd, false)]
        if let p = core.config.publicPort {
            do {
                let host = core.config.publicHost.isEmpty ? core.config.host : core.config.publicHost
                let (pfd, pport) = try Self.bind(host: host, port: p)
                bound.append((pfd, true))
                publicPortBound.store(pport, ordering: .relaxed)
            } catch {
                Syscalls.close(fd)
                throw error
            }
        }
        for l in loops { l.start() }
        let first = loops[0]
        for (lfd, isPublic) in bound {
            let l = Listener(fd: lfd, loops: loops, core: core, isPublic: isPublic)
            listeners.withLock { $0.append(l) }
            try syncOnLoop(first) { try first.register(lfd, l, events: EPOLLIN.rawValue) }
        }
        return port
    }

    /// Has the event loops drive `pollers` on their own threads, one loop each in turn (e.g. a
    /// Redis client's I/O loops: a handler running on a loop then reaches Redis, and is resumed,
    /// without a thread hop). When the server stops, each poller goes on by itself.
    public func host(_ pollers: [any HostedPoller]) {
        for (i, poller) in pollers.enumerated() { loops[i % loops.count].host(poller) }
    }

    /// Has event loop `index` (modulo their number) drive `poller`.
    public func host(_ poller: any HostedPoller, on index: Int) {
        loops[index % loops.count].host(poller)
    }

    /// Graceful shutdown: stop accepting, GOAWAY every connection, let open calls finish for up
    /// to `grace`, then close what is left. Returns true when everything drained in time.
    public func shutdown(grace: Duration) async -> Bool {
        for l in listeners.withLock({ l in defer { l = [] }; return l }) {
            loops[0].execute { l.close() }
        }
        for loop in loops {
            loop.execute { loop.forEachHandler { ($0 as? H2Connection)?.beginDrain() } }
        }
        let deadline = ContinuousClock.now + grace
        while core.counters.connections.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let drained = core.counters.connections.load(ordering: .relaxed) == 0
        for loop in loops {
            loop.execute { loop.forEachHandler { ($0 as? H2Connection)?.close(reason: "grace_expired") } }
        }
        try? await Task.sleep(for: .milliseconds(20))
        for loop in loops { loop.stop() }
        return drained
    }

    private func syncOnLoop(_ loop: EventLoop, _ body: @escaping @Sendable () throws -> Void) throws {
        let result = Mutex<Result<Void, any Error>?>(nil)
        let done = DispatchSemaphoreLite()
        loop.execute {
            let r = Result { try body() }
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        try result.withLock { $0! }.get()
    }

    static func bind(host: String, port: Int) throws -> (Int32, Int) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let ai = res else {
            throw ServerError("cannot resolve listen address \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(res) }
        let fd: Int32
        do {
            fd = try Syscalls.socket(family: ai.pointee.ai_family,
                                     type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        } catch {
            throw ServerError(error.description)
        }
        try? Syscalls.setOption(fd, level: SOL_SOCKET, SO_REUSEADDR, 1)
        do {
            try Syscalls.bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
        } catch {
            Syscalls.close(fd)
            throw ServerError("cannot listen on \(host):\(port): \(error.reason)")
        }
        do {
            try Syscalls.listen(fd, backlog: 1024)
        } catch {
            Syscalls.close(fd)
            throw ServerError(error.description)
        }
        return (fd, SocketAddress.port(of: Syscalls.localAddress(fd)))
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Accepts on loop 0 and spreads connections over the loops round-robin.
final class Listener: EventLoopHandler, @unchecked Sendable {
    let fd: Int32
    let loops: [EventLoop]
    let core: ServerCore
    /// The internet-facing listener: its connections serve the public HTTP routes only.
    let isPublic: Bool
    private var next = 0
    private var closed = false

    init(fd: Int32, loops: [EventLoop], core: ServerCore, isPublic: Bool) {
        self.fd = fd
        self.loops = loops
        self.core = core
        self.isPublic = isPublic
    }

    private var pausedUntil: ContinuousClock.Instant?
    private var lastAcceptLog: ContinuousClock.Instant?

    func handleEvents(_ events: UInt32) {
        while !closed, pausedUntil == nil {
            var ss = sockaddr_storage()
            let cfd: Int32
            do {
                guard case .processed(let n) = try Syscalls.accept(fd, peer: &ss) else { return }
                cfd = Int32(n)
            } catch {
                // Out of descriptors (or memory): the pending connection stays in the backlog and
                // epoll would report it again at once. Stop listening for a moment instead of
                // spinning, and say so at most once a second.
                logAcceptFailure(error)
                if error.isOutOfResources { pauseAccepting() }
                return
            }
            let (peer, address) = SocketAddress.describe(ss)
            guard core.admit(address: address) else {
                // Over a connection limit: closed at once (counted in /metrics).
                Syscalls.close(cfd)
                continue
            }
            var tls: TLSSession?
            if let store = core.config.tls {
                tls = TLSSession(store.current)
                guard tls != nil else {  // out of memory
                    Syscalls.close(cfd)
                    core.connectionClosed(peerAddress: address)
                    continue
                }
            }
            try? Syscalls.setOption(cfd, level: Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let loop = loops[next % loops.count]
            next &+= 1
            let conn = H2Connection(fd: cfd, loop: loop, core: core, peer: peer, peerAddress: address, isPublic: isPublic, tls: tls)
            loop.execute {
                do {
                    try loop.register(cfd, conn, events: EPOLLIN.rawValue)
                } catch {
                    Syscalls.close(cfd)
                    self.core.connectionClosed(peerAddress: address)
                }
            }
        }
    }

    private func logAcceptFailure(_ e: SystemError) {
        let now = ContinuousClock.now
        if let last = lastAcceptLog, now - last < .seconds(1) { return }
        lastAcceptLog = now
        core.logger.warning("accept_failed", ("error", e.reason),
                            ("open_connections", String(core.counters.connections.load(ordering: .relaxed))))
    }

    /// Stops reading the listening socket for 100 ms (it is re-armed by `tick` or the timer).
    private func pauseAccepting() {
        pausedUntil = .now + .milliseconds(100)
        loops[0].modify(fd, events: 0)
        let loop = loops[0]
        Task { [self] in
            try? await Task.sleep(for: .milliseconds(100))
            loop.execute { [self] in self.resumeAccepting() }
        }
    }

    private func resumeAccepting() {
        guard pausedUntil != nil, !closed else { return }
        pausedUntil = nil
        loops[0].modify(fd, events: EPOLLIN.rawValue)
    }

    func close() {
        guard !closed else { return }
        closed = true
        loops[0].unregister(fd)
        Syscalls.close(fd)
    }
}

enum SocketAddress {
    private static func cString(_ buf: [CChar]) -> String {
        String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func port(of ss: sockaddr_storage) -> Int {
        var ss = ss
        return withUnsafePointer(to: &ss) { p in
            switch Int32(p.pointee.ss_family) {
            case AF_INET: return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            case AF_INET6: return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            default: return 0
            }
        }
    }

    /// (`address:port` for logs, the bare address for per-client limits).
    static func describe(_ ss: sockaddr_storage) -> (peer: String, address: String) {
        var ss = ss
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafePointer(to: &ss) { p -> (String, String) in
            switch Int32(p.pointee.ss_family) {
            case AF_INET:
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                    let host = cString(buf)
                    return ("\(host):\(UInt16(bigEndian: sin.pointee.sin_port))", host)
                }
            case AF_INET6:
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    var a = sin.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                    let host = cString(buf)
                    return ("[\(host)]:\(UInt16(bigEndian: sin.pointee.sin6_port))", host)
                }
            default:
                return ("unknown", "unknown")
            }
        }
    }
}

/// A one-shot semaphore for waiting on a loop during start-up (not used on any hot path).
final class DispatchSemaphoreLite: Sendable {
    private let state = Mutex<Bool>(false)
    func signal() { state.withLock { $0 = true } }
    func wait() {
        while !state.withLock({ $0 }) { usleep(200) }
    }
}
