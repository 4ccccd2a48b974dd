import Synchronization

/// Picks the bot for each click of a slug (strategies per slug, state per process):
/// - round robin: the candidates in turn;
/// - weighted: smooth weighted round robin (nginx's): weights 3:1 give exactly 3 and 1 of
///   every 4 clicks, interleaved, with no randomness to test around;
/// - priority: the lowest priority number; ties take turns.
/// Several instances each keep their own turn, so across instances the split is even overall
/// rather than strictly alternating.
public final class SlugDistributor: Sendable {
    struct Turn {
        var counter = 0
        var current: [Int64: Int] = [:]  // smooth weighted round robin: bot id → current weight
    }

    private let turns = Mutex<[String: Turn]>([:])

    public init() {}

    /// The chosen candidate, nil when there is none.
    public func pick(_ route: SlugRoute) -> RouteBot? {
        guard !route.candidates.isEmpty else { return nil }
        return turns.withLock { all in
            if all.count > 100_000 { all.removeAll() }  // bounded: slugs are few, but names are input
            var turn = all[route.slug] ?? Turn()
            defer { all[route.slug] = turn }
            return Self.pick(route.strategy, route.candidates, &turn)
        }
    }

    static func pick(_ strategy: SlugStrategy, _ candidates: [RouteBot], _ turn: inout Turn) -> RouteBot {
        switch strategy {
        case .roundRobin:
            defer { turn.counter &+= 1 }
            return candidates[Int(UInt(bitPattern: turn.counter) % UInt(candidates.count))]
        case .priority:
            let best = candidates.map(\.priority).min()!
            let top = candidates.filter { $0.priority == best }
            defer { turn.counter &+= 1 }
            return top[Int(UInt(bitPattern: turn.counter) % UInt(top.count))]
        case .weighted:
            let ids = Set(candidates.map(\.botID))
            turn.current = turn.current.filter { ids.contains($0.key) }
            let total = candidates.reduce(0) { $0 + max(1, $1.weight) }
            var chosen = candidates[0]
            var bestWeight = Int.min
            for c in candidates {
                let w = turn.current[c.botID, default: 0] + max(1, c.weight)
                turn.current[c.botID] = w
                if w > bestWeight { bestWeight = w; chosen = c }
            }
            turn.current[chosen.botID, default: 0] -= total
            return chosen
        }
    }
}
