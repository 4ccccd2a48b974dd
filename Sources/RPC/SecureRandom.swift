import Glibc
import Synchronization

/// Cryptographically secure random bytes, drawn from the kernel (`/dev/urandom`, the same CSPRNG
/// as `getrandom`, which Swift's Glibc module does not export) 4 KiB at a time.
///
/// Every click mints a token and an event id (16 random bytes each); Swift's
/// `SystemRandomNumberGenerator` makes one `getrandom` system call per 8 bytes, which showed in
/// the click path's profile. This buffer makes one read per ~128 tokens. The bytes are the
/// kernel's CSPRNG output, each handed out once and wiped from the buffer as it is taken; the
/// process never forks without exec (plugin runners are spawned), so no two processes share it.
public struct SecureRandom: RandomNumberGenerator, Sendable {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
        var fd: Int32 = -1
    }
    private static let pool = Mutex(Pool())

    public init() {}

    /// Fills `buffer` with fresh random bytes.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var done = 0
        pool.withLock { p in
            while done < buffer.count {
                if p.next == p.bytes.count { refill(&p) }
                let n = min(buffer.count - done, p.bytes.count - p.next)
                p.bytes.withUnsafeMutableBytes { src in
                    (buffer.baseAddress! + done).copyMemory(from: src.baseAddress! + p.next, byteCount: n)
                    memset(src.baseAddress! + p.next, 0, n)
                }
                p.next += n
                done += n
            }
        }
    }

    /// `count` fresh random bytes.
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }

    public mutating func next() -> UInt64 {
        var v: UInt64 = 0
        withUnsafeMutableBytes(of: &v) { Self.fill($0) }
        return v
    }

    private static func refill(_ p: inout Pool) {
        if p.fd < 0 { p.fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC) }
        // Without a kernel source there is nothing safe to hand out.
        guard p.fd >= 0 else { fatalError("cannot open /dev/urandom: errno \(errno)") }
        var off = 0
        let fd = p.fd
        p.bytes.withUnsafeMutableBytes { raw in
            while off < raw.count {
                let n = read(fd, raw.baseAddress! + off, raw.count - off)
                if n > 0 {
                    off += n
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    fatalError("reading /dev/urandom failed: errno \(errno)")
                }
            }
        }
        p.next = 0
    }
}
