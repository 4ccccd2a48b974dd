import Synchronization

/// Resolved slugs kept for `ttl` (unknown slugs too, so a flood of made-up names costs one
/// query each per `ttl`). Bounded; cleared whenever it would grow past `capacity`.
final class SlugCache: Sendable {
    private struct Entry {
        let route: SlugRoute?
        let expires: ContinuousClock.Instant
    }

    private let ttl: Duration
    private let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    init(ttl: Duration, capacity: Int = 10_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    /// The cached route, or `load()`'s answer (cached unless it threw).
    func route(_ slug: String, load: () async throws -> SlugRoute?) async throws -> SlugRoute? {
        let now = ContinuousClock.now
        if ttl > .zero, let hit = entries.withLock({ $0[slug] }), hit.expires > now { return hit.route }
        let route = try await load()
        if ttl > .zero {
            entries.withLock { e in
                if e.count >= capacity { e.removeAll() }
                e[slug] = Entry(route: route, expires: now + ttl)
            }
        }
        return route
    }

    /// Forgets everything (a bot or slug changed through this instance).
    func invalidate() { entries.withLock { $0.removeAll() } }
}
