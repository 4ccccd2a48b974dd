import RPC

/// Liveness, readiness and metrics on the HTTP/1.1 side door.
public enum StandardRoutes {
    /// A readiness probe: a name (e.g. "postgres") and a check that answers nil when fine or a reason.
    public typealias ReadinessCheck = (name: String, check: @Sendable () async -> String?)

    public static func install(into routes: inout HTTPRoutes, metrics: Metrics, readiness: [ReadinessCheck]) {
        routes.add("GET", "/healthz") { _, _ in
            .text(200, "ok\n")
        }
        routes.add("GET", "/readyz") { _, _ in
            var failures: [String] = []
            for r in readiness {
                if let reason = await r.check() { failures.append("\(r.name): \(reason)") }
            }
            return failures.isEmpty ? .text(200, "ready\n") : .text(503, "not ready\n" + failures.joined(separator: "\n") + "\n")
        }
        routes.add("GET", "/metrics") { _, _ in
            .text(200, metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
    }
}
