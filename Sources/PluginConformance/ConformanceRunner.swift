import PluginHost
import PluginKit
import RPC

/// One line of a conformance report.
public struct ConformanceCheck: Sendable {
    public let passed: Bool
    public let name: String
    public let detail: String
}

/// The result of `ConformanceRunner.run`.
public struct ConformanceReport: Sendable {
    public var checks: [ConformanceCheck] = []
    public var passed: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }

    mutating func add(_ ok: Bool, _ name: String, _ detail: String) {
        checks.append(ConformanceCheck(passed: ok, name: name, detail: detail))
    }

    /// Human-readable report, one check per line, then a verdict line.
    public var text: String {
        var out = ""
        for c in checks { out += "\(c.passed ? "PASS" : "FAIL")  \(c.name)\(c.detail.isEmpty ? "" : ": " + c.detail)\n" }
        let failed = checks.filter { !$0.passed }
        if !failed.isEmpty {
            out += "\nfindings (\(failed.count)):\n"
            for (i, c) in failed.enumerated() { out += "  \(i + 1). \(c.name)\(c.detail.isEmpty ? "" : ": " + c.detail)\n" }
        }
        out += passed ? "verdict: PASS (all \(checks.count) checks)\n" : "verdict: FAIL (\(failed.count) of \(checks.count) checks failed)\n"
        return out
    }
}

/// `pixtrack plugin check`: loads a plugin in isolation, verifies its ABI, replays its recorded
/// exchange against a local fake of its gateway, then probes how it classifies failures.
public struct ConformanceRunner: Sendable {
    public let pluginPath: String
    public let fixture: ConformanceFixture?
    public let logger: Logger
    /// Always runner processes (a crash must be a finding, not a dead checker); `executable`
    /// may name the runner binary (default: `pixtrack-plugin-runner` next to this executable).
    public let isolation: PluginIsolation

    public init(pluginPath: String, fixture: ConformanceFixture?, logger: Logger = Logger(minimum: .error),
                runnerExecutable: String? = nil) {
        self.pluginPath = pluginPath
        self.fixture = fixture
        self.logger = logger
        var isolation = PluginIsolation()
        isolation.runners = true
        isolation.executable = runnerExecutable
        self.isolation = isolation
    }

    public func run() async -> ConformanceReport {
        var report = ConformanceReport()
        var options = GatewayRegistry.Options(pluginDirectory: "")
        options.callTimeoutMs = fixture?.timeoutMs ?? 5_000
        options.createTimeoutMs = options.callTimeoutMs
        options.isolation = isolation
        let registry: GatewayRegistry
        do {
            registry = try GatewayRegistry.single(path: pluginPath, options: options, logger: logger)
        } catch {
            report.add(false, "load", error.reason)
            return report
        }
        guard let info = registry.plugins.first else { report.add(false, "load", "nothing loaded"); return report }
        report.add(true, "load", "\(info.path) sha256=\(info.sha256), in a runner process (pid \(registry.runnerPID(plugin: info.name) ?? 0))")
        report.add(true, "abi", "\(info.name) \(info.version), ABI \(info.abiMajor).\(info.abiMinor), capabilities "
                   + "[\(info.supportsStatusByReference ? "status_by_reference " : "")\(info.supportsWebhooks ? "webhooks" : "")]")
        guard let fixture else {
            report.add(true, "exchange", "skipped: no --config fixture given (only the ABI was checked)")
            return report
        }
        if let expected = fixture.pluginName {
            report.add(expected == info.name, "name", expected == info.name ? expected : "fixture is for '\(expected)', plugin says '\(info.name)'")
        }
        let server: ReplayServer
        do {
            server = try ReplayServer()
        } catch {
            report.add(false, "replay server", error.description)
            return report
        }
        defer { server.stop(); registry.stopRunners() }
        let base = "http://127.0.0.1:\(server.port)"
        let instance: GatewayInstance
        do {
            instance = try await registry.makeInstance(gateway: info.name, config: fixture.config(baseURL: base), label: "conformance")
        } catch {
            report.add(false, "create", error.message)
            return report
        }
        report.add(true, "create", "instance created from the fixture's config")

        var firstCreate: JSON?
        for (i, step) in fixture.steps.enumerated() {
            await runStep(i + 1, step, instance, server, fixture, &report)
            if firstCreate == nil, step["call"]?.string == "create_pix" { firstCreate = step }
        }
        await checkConcurrency(fixture.steps, instance, server, &report)
        if fixture.network, let create = firstCreate {
            await probeFailures(create, registry, info, instance, server, fixture, &report)
        }
        await checkHostileWebhooks(instance, &report)
        await probeGarbageWebhook(instance, &report)
        return report
    }

    // MARK: - Recorded steps

    private func runStep(_ n: Int, _ step: JSON, _ instance: GatewayInstance, _ server: ReplayServer,
                         _ fixture: ConformanceFixture, _ report: inout ConformanceReport) async {
        let call = step["call"]?.string ?? "?"
        let name = "step \(n) \(call)"
        let exchanges = step["http"]?.array ?? []
        server.script(exchanges.map { ConformanceFixture.response($0["respond"]) })
        let expect = step["expect"]?.object ?? [:]
        var actual: [String: String] = [:]
        var failure: GatewayCallFailure?
        defer { crashFinding(n, call, failure, &report) }
        switch call {
        case "create_pix":
            let o = await instance.createPix(ConformanceFixture.createRequest(step["request"]))
            failure = o.failure
            actual = ["outcome": o.outcome.rawValue, "transaction_id": o.transactionID, "gateway_hash": o.gatewayHash,
                      "message": o.message + (o.failure.map { " [\($0)]" } ?? "")]
        case "get_status":
            let o = await instance.getStatus(ConformanceFixture.statusQuery(step["request"]))
            failure = o.failure
            actual = ["status": o.status.rawValue, "transaction_id": o.transactionID, "amount_cents": String(o.amountCents),
                      "reference": o.reference, "gateway_hash": o.gatewayHash,
                      "message": o.message + (o.failure.map { " [\($0)]" } ?? "")]
        case "parse_webhook":
            let o = await instance.parseWebhook(ConformanceFixture.webhook(step["request"]))
            failure = o.failure
            actual = ["status": o.status.rawValue, "transaction_id": o.transactionID, "reference": o.reference,
                      "gateway_hash": o.gatewayHash, "event_id": o.eventID, "amount_cents": String(o.amountCents),
                      "rejected": o.failure == nil ? "false" : "true",
                      "message": o.failure.map { "\($0)" } ?? ""]
        default:
            report.add(false, name, "unknown call '\(call)'")
            return
        }
        // HTTP the plugin sent, against the recording.
        let received = server.received
        var problems: [String] = []
        for (i, ex) in exchanges.enumerated() {
            guard i < received.count else { problems.append("expected request #\(i + 1) never arrived"); continue }
            problems += match(received[i], ex["expect"], index: i + 1)
        }
        if received.count > exchanges.count {
            problems.append("\(received.count - exchanges.count) unexpected extra request(s), first: \(received[exchanges.count].method) \(received[exchanges.count].path)")
        }
        for (key, want) in expect.sorted(by: { $0.key < $1.key }) {
            let w = want.text ?? want.bool.map { $0 ? "true" : "false" } ?? want.serialized
            let got = actual[key] ?? "<not reported>"
            if got != w { problems.append("\(key): expected \(w), got \(got)") }
        }
        let summary = expect.keys.sorted().map { "\($0)=\(actual[$0] ?? "")" }.joined(separator: " ")
        report.add(problems.isEmpty, name, problems.isEmpty ? summary : problems.joined(separator: "; ")
                   + (actual["message"].map { $0.isEmpty ? "" : " (plugin: \($0))" } ?? ""))
    }

    private func match(_ r: ReplayServer.Request, _ expect: JSON?, index: Int) -> [String] {
        guard let e = expect else { return [] }
        var p: [String] = []
        let tag = "request #\(index)"
        if let m = e["method"]?.string, m.uppercased() != r.method.uppercased() { p.append("\(tag): method \(r.method), expected \(m)") }
        if let path = e["path"]?.string, path != r.path { p.append("\(tag): path \(r.path), expected \(path)") }
        for (k, v) in ConformanceFixture.stringMap(e["query"]) where r.query[k] != v {
            p.append("\(tag): query \(k)=\(r.query[k] ?? "<absent>"), expected \(v)")
        }
        for (k, v) in ConformanceFixture.stringMap(e["headers"]) {
            let got = r.headers[k.lowercased()]
            if got == nil || (v != "*" && got != v) { p.append("\(tag): header \(k)=\(got ?? "<absent>"), expected \(v)") }
        }
        if let want = e["json"] {
            guard let got = try? JSON.parse(r.body) else { return p + ["\(tag): body is not JSON"] }
            if let diff = Self.subset(want, got, path: "$") { p.append("\(tag): body \(diff)") }
        }
        return p
    }

    /// nil when every value in `want` appears in `got` (objects match as subsets).
    static func subset(_ want: JSON, _ got: JSON, path: String) -> String? {
        if case .object(let w) = want {
            guard case .object(let g) = got else { return "\(path) is not an object" }
            for (k, v) in w.sorted(by: { $0.key < $1.key }) {
                guard let gv = g[k] else { return "\(path).\(k) is missing" }
                if let d = subset(v, gv, path: "\(path).\(k)") { return d }
            }
            return nil
        }
        if case .array(let w) = want {
            guard case .array(let g) = got, g.count == w.count else { return "\(path) differs in length" }
            for (i, (a, b)) in zip(w, g).enumerated() { if let d = subset(a, b, path: "\(path)[\(i)]") { return d } }
            return nil
        }
        if case .number(let w) = want, case .number(let g) = got, normalized(w) == normalized(g) { return nil }
        return want == got ? nil : "\(path) is \(got.serialized), expected \(want.serialized)"
    }

    /// A JSON number literal without insignificant fraction zeros (`19.90` → `19.9`, `5.0` → `5`).
    static func normalized(_ n: String) -> String {
        guard n.contains("."), !n.contains("e"), !n.contains("E") else { return n }
        var s = Substring(n)
        while s.hasSuffix("0") { s = s.dropLast() }
        if s.hasSuffix(".") { s = s.dropLast() }
        return String(s)
    }

    // MARK: - Failure probes

    private func probeFailures(_ create: JSON, _ registry: GatewayRegistry, _ info: PluginInfo, _ instance: GatewayInstance,
                               _ server: ReplayServer, _ fixture: ConformanceFixture, _ report: inout ConformanceReport) async {
        let exchanges = create["http"]?.array ?? []
        func key(_ ex: JSON) -> String {
            "\((ex["expect"]?["method"]?.string ?? "POST").uppercased()) \(ex["expect"]?["path"]?.string ?? "/")"
        }
        // Every recorded request is answered as recorded, except the one that carries the charge
        // (the step's last), which gets the failure.
        func scripted(_ failure: ReplayServer.Response) -> [String: ReplayServer.Response] {
            var routes: [String: ReplayServer.Response] = [:]
            for ex in exchanges { routes[key(ex)] = ConformanceFixture.response(ex["respond"]) }
            if let last = exchanges.last { routes[key(last)] = failure }
            return routes
        }
        let probes: [(String, ReplayServer.Response, CreateOutcome)] = [
            ("HTTP 503 is UNKNOWN", .answer(status: 503, headers: ["Content-Type": "application/json"], body: Array(#"{"message":"unavailable"}"#.utf8)), .unknown),
            ("HTML page with 200 is UNKNOWN", .answer(status: 200, headers: ["Content-Type": "text/html"], body: Array("<html><body>Bad Gateway</body></html>".utf8)), .unknown),
            ("empty JSON object is UNKNOWN", .answer(status: 200, headers: ["Content-Type": "application/json"], body: Array("{}".utf8)), .unknown),
            ("connection reset after the request is UNKNOWN", .reset, .unknown),
        ]
        for (i, (name, failure, want)) in probes.enumerated() {
            server.route(scripted(failure))
            var request = ConformanceFixture.createRequest(create["request"])
            request.reference = "PAY-CHECK\(i + 1)"
            let o = await instance.createPix(request)
            report.add(o.outcome == want, "probe: \(name)", "got \(o.outcome.rawValue)\(o.message.isEmpty ? "" : " (\(o.message))")")
        }
        // Nothing listens on port 1: the request can never be sent.
        if let unreachable = try? await registry.makeInstance(gateway: info.name, config: fixture.config(baseURL: "http://127.0.0.1:1"),
                                                              label: "conformance-unreachable") {
            var request = ConformanceFixture.createRequest(create["request"])
            request.reference = "PAY-CHECK-UNREACHABLE"
            let o = await unreachable.createPix(request)
            report.add(o.outcome == .notSent, "probe: unreachable gateway is NOT_SENT", "got \(o.outcome.rawValue)")
        }
        server.script([])
    }

    private func probeGarbageWebhook(_ instance: GatewayInstance, _ report: inout ConformanceReport) async {
        let o = await instance.parseWebhook(WebhookRequest(headers: [], body: Array("\u{1}not json at all".utf8)))
        report.add(o.status != .paid, "probe: garbage webhook is not paid", o.failure.map { "rejected (\($0.kind.rawValue))" } ?? "status \(o.status.rawValue)")
    }
}
