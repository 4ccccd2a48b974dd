import Dispatch
import Testing
import RPC
@testable import WebRoutes

@Suite struct HTTPRoutesTests {
    static func request(_ method: String, _ target: String) -> HTTPRequest {
        HTTPRequest(method: method, target: target, headers: [], body: [], peer: "test")
    }

    @Test func capturesDecodedSegments() {
        #expect(HTTPRoutes.match(["go", "{slug}"], ["go", "promo%20x"]) == ["slug": "promo x"])
        #expect(HTTPRoutes.match(["go", "{slug}"], ["go", ""]) == nil)
        #expect(HTTPRoutes.match(["go", "{slug}"], ["go", "%ff"]) == nil, "not UTF-8")
        #expect(HTTPRoutes.match(["go", "{slug}"], ["go", "%4"]) == nil, "truncated escape")
        #expect(HTTPRoutes.match(["webhooks", "{gateway}", "{secret}"], ["webhooks", "paradise", "s"]) == ["gateway": "paradise", "secret": "s"])
        #expect(HTTPRoutes.match(["healthz"], ["healthz", "x"]) == nil)
    }

    @Test func routesByMethodAndFallsBackOnlyForRPCPaths() async {
        var routes = HTTPRoutes()
        routes.add("GET", "/go/{slug}") { _, p in .text(200, p["slug"] ?? "") }
        routes.fallback { _ in .text(299, "rpc") }
        #expect(await routes.route(Self.request("GET", "/go/abc?x=1")).body == Array("abc".utf8))
        #expect(await routes.route(Self.request("HEAD", "/go/abc")).body == [])
        #expect(await routes.route(Self.request("POST", "/go/abc")).status == 405)
        #expect(await routes.route(Self.request("POST", "/pkg.Svc/Method")).status == 299)
        #expect(await routes.route(Self.request("GET", "/nothing")).status == 404)
        #expect(await routes.route(Self.request("GET", "/a/b/c")).status == 404)
    }

    @Test func connectErrorsUseConnectNamesAndStatuses() {
        let r = ConnectGateway.errorResponse(RPCError(.notFound, "pagamento \"x\" não existe"))
        #expect(r.status == 404)
        #expect(String(decoding: r.body, as: UTF8.self) == #"{"code":"not_found","message":"pagamento \"x\" não existe"}"#)
        #expect(ConnectGateway.errorResponse(RPCError(.cancelled, "")).body.starts(with: Array(#"{"code":"canceled""#.utf8)))
        #expect(ConnectGateway.errorResponse(RPCError(.resourceExhausted, "")).status == 429)
    }

    @Test func pathSegmentsAreWhatSplittingAtSlashGives() {
        for path in ["/go/bench", "/", "", "*", "a/b", "//", "/go//x/", "/t/abc/cookies", "/%2F/é/ü", "no-slash"] {
            let split = Array(path.split(separator: "/", omittingEmptySubsequences: false).dropFirst())
            #expect(HTTPRoutes.segments(path) == split, "\(path)")
        }
    }

    @Test func metricsRenderInPrometheusTextFormat() {
        let m = Metrics()
        m.recordCall(method: "/a.B/C", code: .ok, seconds: 0.003, transport: "grpc")
        m.recordCall(method: "/a.B/C", code: .ok, seconds: 0.2, transport: "grpc")
        m.increment("x_total", help: "x", labels: [("k", "va\"l\nue")])
        let text = m.render()
        #expect(text.contains(#"pixtrack_rpc_calls_total{method="/a.B/C",code="OK",transport="grpc"} 2"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.B/C",le="0.005"} 1"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.B/C",le="0.25"} 2"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_count{method="/a.B/C"} 2"#))
        #expect(text.contains(#"x_total{k="va\"l\nue"} 1"#))
    }

    /// Under the server's loop preference, a route added with `onEventLoop: true` runs on the
    /// preferred executor; every other route, and the RPC fallback, moves off it first (it may
    /// block, and must not stall the loop's other connections).
    @Test func onlyRoutesMarkedOnEventLoopStayOnThePreferredExecutor() async {
        let executor = MarkingExecutor()
        var routes = HTTPRoutes()
        routes.add("GET", "/loop", onEventLoop: true) { _, _ in .text(200, executor.isCurrent ? "on" : "off") }
        routes.add("GET", "/pool") { _, _ in .text(200, executor.isCurrent ? "on" : "off") }
        routes.fallback { _ in .text(200, executor.isCurrent ? "on" : "off") }
        let handler = routes.handler
        let answers = await Task(executorPreference: executor) { () -> [String] in
            var answers: [String] = []
            for target in ["/loop", "/pool", "/pkg.Svc/Method", "/loop"] {
                answers.append(String(decoding: await handler(Self.request("GET", target)).body, as: UTF8.self))
            }
            answers.append(executor.isCurrent ? "on" : "off")  // back on it after each route
            return answers
        }.value
        #expect(answers == ["on", "off", "off", "on", "on"])
    }
}

/// A task executor on a serial queue that knows when it is the one running.
final class MarkingExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "test.marking-executor")
    private let key = DispatchSpecificKey<Bool>()

    init() { queue.setSpecific(key: key, value: true) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    var isCurrent: Bool { DispatchQueue.getSpecific(key: key) == true }
}
