import CSystemShims
import Glibc
import TLS

/// `rediss://` for hiredis 0.14.1, which has no TLS of its own. The TLS connection to Redis is
/// made here (certificate chain and host name verified). hiredis gets one end of a private
/// socket pair; a pump thread carries the bytes between the other end and Redis, encrypting one
/// way and decrypting the other. Each side has a bounded buffer (1 MiB) and non-blocking I/O,
/// so a pipeline larger than a socket buffer cannot deadlock the two. When either side closes,
/// the pump closes both: hiredis sees EOF and the pool reconnects as it does for a dropped TCP
/// connection. Nothing leaves the process unencrypted.
enum RedisTLSTunnel {
    /// Connects to `host:port`, runs the TLS handshake (both within `timeout`), starts the pump
    /// and returns the descriptor hiredis should use.
    /// - Throws: `RedisError.unavailable` (refused, unreachable, timed out, TLS refused).
    static func open(host: String, port: Int, timeout: Duration, context: TLSContext) throws(RedisError) -> Int32 {
        let deadline = ContinuousClock.now + timeout
        let tcp = try connect(host: host, port: port, deadline: deadline)
        guard let session = TLSSession(context, serverName: host, offerH2: false) else {
            Glibc.close(tcp)
            throw .unavailable("cannot start TLS to Redis")
        }
        let early: [UInt8]
        do {
            early = try session.handshake(fd: tcp, deadline: deadline)
        } catch {
            Glibc.close(tcp)
            throw .unavailable("TLS handshake with Redis at \(host):\(port) failed: \(error.description)")
        }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            Glibc.close(tcp)
            throw .unavailable("socketpair failed: \(String(cString: strerror(errno)))")
        }
        setNonBlocking(tcp)
        setNonBlocking(pair[1])
        let pump = Pump(local: pair[1], remote: tcp, session: session, early: early)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(pump).toOpaque()
        guard pthread_create(&thread, nil, { raw in
            let pump = Unmanaged<Pump>.fromOpaque(raw!).takeRetainedValue()
            pump.run()
            return nil
        }, box) == 0 else {
            Unmanaged<Pump>.fromOpaque(box).release()
            Glibc.close(pair[0])
            throw .unavailable("cannot start the Redis TLS pump thread")
        }
        pthread_detach(thread)
        return pair[0]
    }

    /// A TCP connection to `host:port`, made within `deadline`, left blocking, with
    /// TCP_NODELAY and keep-alive.
    private static func connect(host: String, port: Int, deadline: ContinuousClock.Instant) throws(RedisError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let first = res else {
            throw .unavailable("cannot resolve the Redis host")
        }
        defer { freeaddrinfo(res) }
        var lastError: Int32 = ECONNREFUSED
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            defer { ai = a.pointee.ai_next }
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = errno; continue }
            setNonBlocking(fd)
            var rc = Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen)
            if rc != 0 && errno == EINPROGRESS {
                let left = deadline - ContinuousClock.now
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if left > .zero, poll(&pfd, 1, Int32(min(Int64(left / .milliseconds(1)) + 1, 60_000))) > 0 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    rc = err == 0 ? 0 : -1
                    errno = err
                } else {
                    rc = -1
                    errno = ETIMEDOUT
                }
            }
            if rc == 0 {
                let flags = fcntl(fd, F_GETFL)
                _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            lastError = errno
            Glibc.close(fd)
        }
        if lastError == ETIMEDOUT { throw .unavailable("connect timed out") }
        throw .unavailable("cannot connect to Redis: \(String(cString: strerror(lastError)))")
    }

    private static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    /// One tunnel's pump: its own thread, its own session (never shared).
    private final class Pump {
        let local: Int32
        let remote: Int32
        let session: TLSSession
        /// Plaintext for hiredis, ciphertext for Redis: each bounded by `cap`.
        var toLocal: [UInt8]
        var toRemote: [UInt8] = []
        let cap = 1 << 20

        init(local: Int32, remote: Int32, session: TLSSession, early: [UInt8]) {
            self.local = local
            self.remote = remote
            self.session = session
            self.toLocal = early
        }

        func run() {
            defer {
                Glibc.close(local)
                Glibc.close(remote)
            }
            var buf = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let want: (Bool, Bool) = (toRemote.count < cap, toLocal.count < cap)
                var fds = [
                    pollfd(fd: local, events: Int16(want.0 ? POLLIN : 0) | Int16(toLocal.isEmpty ? 0 : POLLOUT), revents: 0),
                    pollfd(fd: remote, events: Int16(want.1 ? POLLIN : 0) | Int16(toRemote.isEmpty ? 0 : POLLOUT), revents: 0),
                ]
                if poll(&fds, 2, -1) < 0 {
                    if errno == EINTR { continue }
                    return
                }
                let broken = Int16(POLLHUP | POLLERR)
                // hiredis → Redis
                if fds[0].revents & (Int16(POLLIN) | broken) != 0 {
                    let n = buf.withUnsafeMutableBytes { Glibc.read(local, $0.baseAddress, $0.count) }
                    if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                        // hiredis let go of the connection: close_notify, then done.
                        session.shutdown()
                        session.drain(into: &toRemote)
                        _ = toRemote.withUnsafeBytes { Glibc.send(remote, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                        return
                    }
                    if n > 0 {
                        guard buf.withUnsafeBytes({ session.send(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) == .ok else { return }
                        session.drain(into: &toRemote)
                    }
                }
                // Redis → hiredis
                var remoteDone = false
                if fds[1].revents & (Int16(POLLIN) | broken) != 0 {
                    let n = buf.withUnsafeMutableBytes { recv(remote, $0.baseAddress, $0.count, 0) }
                    if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                        remoteDone = true
                    } else if n > 0 {
                        var plain: [UInt8] = []
                        let outcome = buf.withUnsafeMutableBytes { raw in
                            session.receive(UnsafeRawBufferPointer(rebasing: raw[0..<n]), scratch: raw) { plain.append(contentsOf: $0); return true }
                        }
                        toLocal.append(contentsOf: plain)
                        session.drain(into: &toRemote)
                        if outcome != .ok { remoteDone = true }
                    }
                }
                guard Self.write(&toRemote, to: remote), Self.write(&toLocal, to: local) else { return }
                if remoteDone {
                    // Hand hiredis what arrived before the end; closing `local` is its EOF.
                    if !toLocal.isEmpty { _ = toLocal.withUnsafeBytes { Glibc.send(local, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) } }
                    return
                }
            }
        }

        /// Writes what the descriptor takes now; false when it is broken.
        private static func write(_ buffer: inout [UInt8], to fd: Int32) -> Bool {
            guard !buffer.isEmpty else { return true }
            let n = buffer.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 {
                buffer.removeFirst(n)
                return true
            }
            return n < 0 && (errno == EAGAIN || errno == EINTR)
        }
    }
}
