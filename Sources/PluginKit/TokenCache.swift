import Glibc

/// Bearer tokens cached per credentials, refreshed before they expire, with one fetch in flight
/// per key: concurrent callers that need a fresh token wait for the fetch another thread started
/// instead of all fetching at once.
///
/// `@unchecked Sendable`: `entries` and `refreshing` are only touched with `mutex` held; waiters
/// sleep on `cond`.
public final class TokenCache: @unchecked Sendable {
    public struct Token: Sendable {
        public let value: String
        /// Monotonic milliseconds (the host's `monotonic_ms` clock).
        public let expiresAtMs: Int64

        public init(value: String, expiresAtMs: Int64) {
            self.value = value
            self.expiresAtMs = expiresAtMs
        }
    }

    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var entries: [String: Token] = [:]
    private var refreshing: Set<String> = []

    public init() {
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    /// A token for `key` valid for at least `marginMs` more, fetching one when needed.
    ///
    /// - Parameters:
    ///   - now: the current monotonic time in ms.
    ///   - waitMs: how long to wait for another thread's fetch before giving up.
    ///   - fetch: obtains a new token; called without the lock held.
    public func token(key: String, now: () -> Int64, marginMs: Int64, waitMs: Int64,
                      fetch: () throws(PluginError) -> Token) throws(PluginError) -> String {
        let giveUpAt = now() + max(0, waitMs)
        pthread_mutex_lock(&mutex)
        while true {
            if let t = entries[key], now() < t.expiresAtMs - marginMs {
                pthread_mutex_unlock(&mutex)
                return t.value
            }
            if refreshing.contains(key) {
                let remaining = giveUpAt - now()
                guard remaining > 0 else {
                    pthread_mutex_unlock(&mutex)
                    throw .deadline("timed out waiting for a token refresh")
                }
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC, &ts)
                let total = Int64(ts.tv_nsec) + min(remaining, 60_000) * 1_000_000
                ts.tv_sec += Int(total / 1_000_000_000)
                ts.tv_nsec = Int(total % 1_000_000_000)
                _ = pthread_cond_timedwait(&cond, &mutex, &ts)
                continue
            }
            refreshing.insert(key)
            pthread_mutex_unlock(&mutex)
            let result: Result<Token, PluginError>
            do {
                result = .success(try fetch())
            } catch {
                result = .failure(error)
            }
            pthread_mutex_lock(&mutex)
            refreshing.remove(key)
            if case .success(let t) = result { entries[key] = t }
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
            return try result.get().value
        }
    }

    /// Forgets `token` for `key` (the gateway refused it), unless a newer one replaced it.
    public func invalidate(key: String, token: String) {
        pthread_mutex_lock(&mutex)
        if entries[key]?.value == token { entries[key] = nil }
        pthread_mutex_unlock(&mutex)
    }
}
