import CSystemShims
import Glibc

// Every socket, descriptor and epoll system call of the server (the HTTP/2 loops, TLS, the Redis
// loop, the plugin runners' sockets) goes through `Syscalls`: errno
// is read right after the call (nothing in between may change it), EINTR is retried here and
// nowhere else, and callers get either a result or a `SystemError` naming the call. Call sites
// decide policy (close the connection, pause accepting) from the result, never from errno.

/// What a non-blocking read or write did.
public enum IOResult: Equatable, Sendable {
    /// That many bytes were moved (for `accept`: the new descriptor).
    case processed(Int)
    /// Nothing could be moved without blocking (EAGAIN); epoll will say when to try again.
    case wouldBlock
    /// The peer closed its side (a read of 0 bytes).
    case eof
}

/// An errno captured at the failing call, with the call's name.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let code: Int32

    public init(call: String, code: Int32) {
        self.call = call
        self.code = code
    }

    /// The C library's text for `code`.
    public var reason: String { String(cString: strerror(code)) }
    public var description: String { "\(call): \(reason)" }

    /// The process (or system) is out of descriptors or memory: retrying at once would fail again.
    public var isOutOfResources: Bool { code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM }
}

public enum Syscalls {
    /// Runs `body` until it returns something other than -1 with EINTR. -1 with any other errno
    /// becomes a `SystemError` for `call`, unless `wouldBlock` says the errno is EAGAIN-like and
    /// the caller wants that as a value (nil from this function).
    @inline(__always)
    private static func retrying<T: FixedWidthInteger>(_ call: StaticString, wouldBlock: Bool = false,
                                                       _ body: () -> T) throws(SystemError) -> T? {
        while true {
            let r = body()
            if r != -1 { return r }
            let e = errno
            if e == EINTR { continue }
            if wouldBlock, e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError(call: call.description, code: e)
        }
    }

    // MARK: data

    /// One read into `buffer`: bytes read, `.eof`, or `.wouldBlock`.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        guard let n = try retrying("read", wouldBlock: true, { Glibc.read(fd, buffer.baseAddress, buffer.count) }) else {
            return .wouldBlock
        }
        return n == 0 ? .eof : .processed(n)
    }

    /// One `send(2)` of `bytes`: bytes taken by the kernel, or `.wouldBlock`.
    public static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, flags: Int32) throws(SystemError) -> IOResult {
        guard let n = try retrying("send", wouldBlock: true, { Glibc.send(fd, bytes.baseAddress, bytes.count, flags) }) else {
            return .wouldBlock
        }
        return .processed(n)
    }

    /// One `recv(2)` into `buffer`: bytes received, `.eof`, or `.wouldBlock` (a non-blocking
    /// descriptor or `MSG_DONTWAIT`).
    public static func recv(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, flags: Int32 = 0) throws(SystemError) -> IOResult {
        guard let n = try retrying("recv", wouldBlock: true, { Glibc.recv(fd, buffer.baseAddress, buffer.count, flags) }) else {
            return .wouldBlock
        }
        return n == 0 ? .eof : .processed(n)
    }

    /// Waits up to `timeoutMs` for `events` on `fd`; the events that occurred (0 on timeout).
    public static func poll(_ fd: Int32, events: Int16, timeoutMs: Int32) throws(SystemError) -> Int16 {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let n = try retrying("poll", { Glibc.poll(&pfd, 1, timeoutMs) })!
        return n > 0 ? pfd.revents : 0
    }

    /// Closes `fd`. Its result is not reported: after `close(2)` the descriptor is gone whatever
    /// it returned, and EINTR must not be retried (the number may already be reused).
    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    // MARK: sockets

    public static func socket(family: Int32, type: Int32) throws(SystemError) -> Int32 {
        try retrying("socket", { Glibc.socket(family, type, 0) })!
    }

    /// Sets an integer socket option (`SO_REUSEADDR`, `TCP_NODELAY`, ...).
    public static func setOption(_ fd: Int32, level: Int32, _ name: Int32, _ value: Int32) throws(SystemError) {
        var v = value
        _ = try retrying("setsockopt", { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) })
    }

    /// `SO_SNDTIMEO`: a blocking send gives up after `timeout`.
    public static func setSendTimeout(_ fd: Int32, _ timeout: Duration) throws(SystemError) {
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1000 }
        _ = try retrying("setsockopt", { setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) })
    }

    public static func bind(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws(SystemError) {
        _ = try retrying("bind", { Glibc.bind(fd, address, length) })
    }

    public static func listen(_ fd: Int32, backlog: Int32) throws(SystemError) {
        _ = try retrying("listen", { Glibc.listen(fd, backlog) })
    }

    /// A blocking connect. EINTR is not retried by calling connect again (that would fail with
    /// EALREADY while the first attempt goes on): it is reported like any failure.
    public static func connect(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws(SystemError) {
        if Glibc.connect(fd, address, length) != 0 { throw SystemError(call: "connect", code: errno) }
    }

    /// The bound address of `fd`.
    public static func localAddress(_ fd: Int32) -> sockaddr_storage {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return ss
    }

    /// Accepts one pending connection (non-blocking, close-on-exec): `.processed(fd)` with the
    /// peer's address in `peer`, or `.wouldBlock` when none is pending. A connection the peer
    /// aborted before we took it (ECONNABORTED) is skipped like an interrupted call.
    public static func accept(_ fd: Int32, peer: inout sockaddr_storage) throws(SystemError) -> IOResult {
        while true {
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let cfd = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pt_accept_nonblocking(fd, $0, &len) }
            }
            if cfd >= 0 { return .processed(Int(cfd)) }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw SystemError(call: "accept4", code: e)
        }
    }

    // MARK: epoll and eventfd

    public static func epollCreate() throws(SystemError) -> Int32 {
        try retrying("epoll_create1", { epoll_create1(Int32(EPOLL_CLOEXEC)) })!
    }

    /// A non-blocking, close-on-exec eventfd (the loop's wake-up).
    public static func eventFD() throws(SystemError) -> Int32 {
        try retrying("eventfd", { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) })!
    }

    public static func epollAdd(_ epfd: Int32, _ fd: Int32, events: UInt32) throws(SystemError) {
        _ = try retrying("epoll_ctl(ADD)", { pt_epoll_add(epfd, fd, events) })
    }

    /// Changes the events watched on a registered `fd`. A failure means the descriptor is no
    /// longer registered (it is being closed): there is nothing to do about it.
    public static func epollModify(_ epfd: Int32, _ fd: Int32, events: UInt32) {
        _ = pt_epoll_mod(epfd, fd, events)
    }

    /// Stops watching `fd` (its close would do it too; this keeps the table exact).
    public static func epollRemove(_ epfd: Int32, _ fd: Int32) {
        _ = pt_epoll_del(epfd, fd)
    }

    /// Waits up to `timeoutMs` for events, at most `fds.count`; their descriptors and masks are
    /// written to the two arrays. Returns how many.
    public static func epollWait(_ epfd: Int32, fds: inout [Int32], events: inout [UInt32], timeoutMs: Int32) throws(SystemError) -> Int {
        let max = Int32(min(fds.count, events.count))
        return Int(try retrying("epoll_wait", { pt_epoll_wait(epfd, &fds, &events, max, timeoutMs) })!)
    }

    /// Adds one to an eventfd counter (wakes whoever waits on it). A full counter (EAGAIN)
    /// already means a wake-up is pending.
    public static func signalEventFD(_ fd: Int32) {
        var one: UInt64 = 1
        _ = try? retrying("write", wouldBlock: true, { withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) } })
    }

    /// Resets an eventfd counter after a wake-up (or a timerfd's expiry count: the same 8-byte read).
    public static func drainEventFD(_ fd: Int32) {
        var buf: UInt64 = 0
        _ = try? retrying("read", wouldBlock: true, { withUnsafeMutableBytes(of: &buf) { Glibc.read(fd, $0.baseAddress, 8) } })
    }
}
