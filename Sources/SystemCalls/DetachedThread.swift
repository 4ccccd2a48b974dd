import Glibc

extension Syscalls {
    /// Runs `body` on a new detached POSIX thread (the Redis and PostgreSQL I/O loops and their
    /// connect attempts). False when no thread could be made: `body` then never runs, and the
    /// caller answers whoever was waiting for it.
    public static func detachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        guard pthread_create(&thread, nil, { raw in
                  Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
                  return nil
              }, box) == 0
        else {
            Unmanaged<Box>.fromOpaque(box).release()
            return false
        }
        pthread_detach(thread)
        return true
    }
}

extension Duration {
    /// Whole milliseconds, rounded up (a timer armed for it never fires early); 0 or less stays as is.
    public var roundedUpMilliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
