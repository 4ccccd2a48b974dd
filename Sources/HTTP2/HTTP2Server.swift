import CSystemShims
import Glibc
import Synchronization
import RPC

/// Process-wide counters the server keeps (exported by /metrics later).
public final class ServerCounters: Sendable {
    public let calls = Atomic<Int>(0)
    public let inFlight = Atomic<Int>(0)
    public let connections = Atomic<Int>(0)
    public let protocolErrors = Atomic<Int>(0)
    public init() {}
}

/// What every connection shares: configuration, the dispatcher and the counters.
final class ServerCore: Sendable {
    let config: HTTP2Server.Configuration
    let logger: Logger
    let dispatcher: CallDispatcher
    let counters: ServerCounters
    let httpHandler: HTTPHandler?

    init(config: HTTP2Server.Configuration, router: RPCRouter, httpHandler: HTTPHandler?, logger: Logger, metrics: Metrics, counters: ServerCounters) {
        self.config = config
        self.httpHandler = httpHandler
        self.logger = logger
        self.counters = counters
        self.dispatcher = CallDispatcher(router: router, config: config, logger: logger, counters: counters, metrics: metrics)
    }

    func connectionClosed() { counters.connections.subtract(1, ordering: .relaxed) }
}

/// The gRPC server: one listening socket, `eventLoops` epoll threads, nghttp2 sessions.
public final class HTTP2Server: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (see the return value of `start()`).
        public var port = 50051
        public var maxMessageBytes = 4 << 20
        public var maxConcurrentStreams = 1000
        public var maxHeaderListBytes = 16 << 10
        /// Per connection: past this many unsent bytes we stop reading from the peer.
        public var maxOutboundBuffer = 4 << 20
        public var eventLoops = 2
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
        /// An HTTP/1.1 connection with nothing in flight is closed after this.
        public var idle: Duration = .seconds(60)
        public init() {}
    }

    private let core: ServerCore
    private let loops: [EventLoop]
    private let listener = Mutex<Listener?>(nil)

    public var counters: ServerCounters { core.counters }

    /// `httpHandler` answers HTTP/1.1 requests on the same port (nil: every one gets 404).
    public init(configuration: Configuration, router: RPCRouter, httpHandler: HTTPHandler? = nil,
                logger: Logger, metrics: Metrics = Metrics(), counters: ServerCounters = ServerCounters()) throws {
        core = ServerCore(config: configuration, router: router, httpHandler: httpHandler, logger: logger, metrics: metrics, counters: counters)
        metrics.gauge("pixtrack_rpc_in_flight", help: "gRPC calls started and not yet answered.") {
            [([], Double(counters.inFlight.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_connections_open", help: "Open TCP connections (HTTP/2 and HTTP/1.1).") {
            [([], Double(counters.connections.load(ordering: .relaxed)))]
        }
        metrics.gauge("pixtrack_http2_protocol_errors_total", help: "Connections ended by an HTTP/2 protocol error.") {
            [([], Double(counters.protocolErrors.load(ordering: .relaxed)))]
        }
        loops = try (0..<max(1, configuration.eventLoops)).map { try EventLoop(index: $0) }
    }

    /// Binds, starts the loops and returns the bound port.
    public func start() throws -> Int {
        let (fd, port) = try Self.bind(host: core.config.host, port: core.config.port)
        for l in loops { l.start() }
        let l = Listener(fd: fd, loops: loops, core: core)
        listener.withLock { $0 = l }
        let first = loops[0]
        try syncOnLoop(first) { try first.register(fd, l, events: EPOLLIN.rawValue) }
        return port
    }

    /// Graceful shutdown: stop accepting, GOAWAY every connection, let open calls finish for up
    /// to `grace`, then close what is left. Returns true when everything drained in time.
    public func shutdown(grace: Duration) async -> Bool {
        if let l = listener.withLock({ l in defer { l = nil }; return l }) {
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
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ServerError("cannot listen on \(host):\(port): \(String(cString: strerror(e)))")
        }
        guard listen(fd, 1024) == 0 else {
            Glibc.close(fd)
            throw ServerError("listen: \(String(cString: strerror(errno)))")
        }
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, SocketAddress.port(of: ss))
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
    private var next = 0
    private var closed = false

    init(fd: Int32, loops: [EventLoop], core: ServerCore) {
        self.fd = fd
        self.loops = loops
        self.core = core
    }

    func handleEvents(_ events: UInt32) {
        while !closed {
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let cfd = withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pt_accept_nonblocking(fd, $0, &len) }
            }
            if cfd < 0 {
                if errno == EINTR { continue }
                if errno != EAGAIN { core.logger.warning("accept_failed", ("error", String(cString: strerror(errno)))) }
                return
            }
            var one: Int32 = 1
            setsockopt(cfd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let loop = loops[next % loops.count]
            next &+= 1
            let conn = H2Connection(fd: cfd, loop: loop, core: core, peer: SocketAddress.describe(ss))
            core.counters.connections.add(1, ordering: .relaxed)
            loop.execute {
                do {
                    try loop.register(cfd, conn, events: EPOLLIN.rawValue)
                } catch {
                    Glibc.close(cfd)
                    self.core.connectionClosed()
                }
            }
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        loops[0].unregister(fd)
        Glibc.close(fd)
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

    static func describe(_ ss: sockaddr_storage) -> String {
        var ss = ss
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafePointer(to: &ss) { p -> String in
            switch Int32(p.pointee.ss_family) {
            case AF_INET:
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                    return "\(cString(buf)):\(UInt16(bigEndian: sin.pointee.sin_port))"
                }
            case AF_INET6:
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    var a = sin.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                    return "[\(cString(buf))]:\(UInt16(bigEndian: sin.pointee.sin6_port))"
                }
            default:
                return "unknown"
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
