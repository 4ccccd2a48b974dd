import BRCode
import Foundation
import PluginConformance
import PluginHost
import PluginKit
import Testing

@Suite struct ConformanceKitTests {
    static func fixture(_ name: String) throws -> ConformanceFixture {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(TestEnv.repoRoot)/Plugins/\(name)/conformance.json"))
        return try ConformanceFixture(bytes: Array(data))
    }

    @Test(arguments: ["atomopay", "paradise", "umbrellapag", "syncpay", "sandbox"])
    func shippedPluginsPassTheirRecordedExchange(_ name: String) async throws {
        let report = await ConformanceRunner(pluginPath: try TestEnv.plugin(name), fixture: try Self.fixture(name),
                                             logger: TestEnv.quiet).run()
        #expect(report.passed, "\(report.text)")
        #expect(report.checks.count >= 8)
    }

    /// The kit runs the plugin in a runner: a crash is a finding that names the call and how the
    /// runner died, and the checker lives on to report the rest.
    @Test(arguments: [(Fixture.segv, "crash: step 1 create_pix", "signal 11"), (.abort, "crash: step 2 get_status", "signal 6"),
                      (.exit, "crash: step 3 parse_webhook", "exited with status 3")])
    func aCrashingPluginIsAFindingNotADeadChecker(_ mode: Fixture, _ finding: String, _ how: String) async throws {
        let path = try await TestEnv.compileFixture(mode: mode.rawValue, dir: TestEnv.tempDir(), name: "libcrash.so")
        let fixture = try ConformanceFixture(json: try JSON.parse(Array(#"""
            {"plugin": "fixture", "network": false, "timeout_ms": 3000, "steps": [
              {"call": "create_pix", "request": {"reference": "PAY-1", "amount_cents": 1990}, "expect": {"outcome": "created"}},
              {"call": "get_status", "request": {"transaction_id": "fixture-1"}, "expect": {"status": "pending"}},
              {"call": "parse_webhook", "request": {"body": "{}"}, "expect": {"transaction_id": "fixture-1"}}]}
            """#.utf8)))
        let report = await ConformanceRunner(pluginPath: path, fixture: fixture, logger: TestEnv.quiet).run()
        #expect(!report.passed)
        let crash = report.checks.first { $0.name == finding }
        #expect(crash?.passed == false && crash?.detail.contains(how) == true, "\(report.text)")
        #expect(report.text.contains("findings (") && report.text.contains("verdict: FAIL"))
        // It went on after the crash: the concurrency and hostile-body checks were reported too.
        #expect(report.checks.contains { $0.name.hasPrefix("concurrent: step 3") })
        #expect(report.checks.filter { $0.name.hasPrefix("hostile webhook: ") }.count == 6)
    }

    /// The well-behaved fixture passes the concurrency and hostile-body checks (control case).
    @Test func aCleanPluginPassesTheStressChecks() async throws {
        let path = try await TestEnv.compileFixture(mode: Fixture.good.rawValue, dir: TestEnv.tempDir(), name: "libclean.so")
        let fixture = try ConformanceFixture(json: try JSON.parse(Array(#"""
            {"plugin": "fixture", "network": false, "steps": [
              {"call": "get_status", "request": {"transaction_id": "fixture-1"}, "expect": {"status": "pending"}}]}
            """#.utf8)))
        let report = await ConformanceRunner(pluginPath: path, fixture: fixture, logger: TestEnv.quiet).run()
        #expect(report.checks.contains { $0.name.hasPrefix("concurrent: step 1 get_status") && $0.passed }, "\(report.text)")
        #expect(report.checks.contains { $0.name.hasPrefix("crash") } == false)
        #expect(report.checks.first { $0.name == "load" }?.detail.contains("in a runner process") == true)
    }

    @Test func aFixtureForAnotherGatewayFails() async throws {
        let report = await ConformanceRunner(pluginPath: try TestEnv.plugin("paradise"), fixture: try Self.fixture("atomopay"),
                                             logger: TestEnv.quiet).run()
        #expect(!report.passed)
        #expect(report.text.contains("FAIL  name"))
    }

    @Test func misbehavingPluginsFailTheABICheck() async throws {
        let dir = TestEnv.tempDir()
        for f in [Fixture.wrongMajor, .noEntry, .smallStruct] {
            let path = try await TestEnv.compileFixture(mode: f.rawValue, dir: dir, name: "kit_\(f).so")
            let report = await ConformanceRunner(pluginPath: path, fixture: nil, logger: TestEnv.quiet).run()
            #expect(!report.passed)
            #expect(report.text.contains("FAIL  load"), "\(report.text)")
        }
    }

    /// The plugin guide's plain `cc -shared` command builds a plugin the host loads and runs.
    @Test func theCExampleBuildsWithTheGuidesCommandAndWorks() async throws {
        let dir = TestEnv.tempDir()
        try await TestEnv.run("/usr/bin/env", ["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                                         "-I", "Sources/GatewayABI/include", "-I", "Sources/PixTrackProto/include",
                                         "-o", "\(dir)/libexample_c.so", "Plugins/example-c/example_gateway.c",
                                         "Sources/PixTrackProto/pixtrack/v1/gateway.pb-c.c", "-lprotobuf-c"], cwd: TestEnv.repoRoot)
        let guide = try String(contentsOfFile: "\(TestEnv.repoRoot)/Plugins/README.md", encoding: .utf8)
        #expect(guide.contains("Plugins/example-c/example_gateway.c"))
        // Its own fixture (whose config keys are PluginConfig's) passes the whole kit.
        let report = await ConformanceRunner(pluginPath: "\(dir)/libexample_c.so", fixture: try Self.fixture("example-c"),
                                             logger: TestEnv.quiet).run()
        #expect(report.passed, "\(report.text)")
        #expect(report.checks.count >= 8)
        // The guide's protoc-c lines work as written from the repository root.
        let generate = guide.split(separator: "\n").filter { $0.hasPrefix("mkdir -p /tmp/pt-gen") || $0.hasPrefix("protoc-c ") }
        #expect(generate.count == 2)
        try await TestEnv.run("/bin/sh", ["-ec", generate.joined(separator: "\n")], cwd: TestEnv.repoRoot)
        try await TestEnv.run("/usr/bin/env", ["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-I", "Sources/GatewayABI/include",
                                         "-I", "/tmp/pt-gen", "-o", "\(dir)/libexample_gen.so", "Plugins/example-c/example_gateway.c",
                                         "/tmp/pt-gen/pixtrack/v1/gateway.pb-c.c", "-lprotobuf-c"], cwd: TestEnv.repoRoot)

        let reg = try await TestEnv.registry(path: "\(dir)/libexample_c.so")
        let offline = try await reg.makeInstance(gateway: "example_c", config: GatewayConfig())
        let o = await offline.createPix(.sample(uniqueReference("c"), cents: 777))
        #expect(o.outcome == .created)
        #expect(BRCode.amountCents(o.pixCode) == 777)
        let hook = await offline.parseWebhook(WebhookRequest(body: Array("id=ex1&status=paid".utf8)))
        #expect(hook.status == .paid && hook.transactionID == "ex1")
        // An id that is not printable ASCII is refused, not answered as a result the host cannot
        // decode (found by scripts/fuzz: webhook-example-c).
        let odd = await offline.parseWebhook(WebhookRequest(body: Array("id=ex".utf8) + [0xFF] + Array("&status=paid".utf8)))
        #expect(odd.failure?.refusedInput == true, "\(String(describing: odd.failure))")
        // Ids that do not fit are refused, never cut (nor is a body read in part).
        let longID = await offline.parseWebhook(WebhookRequest(body: Array("status=paid&id=\(String(repeating: "a", count: 128))".utf8)))
        #expect(longID.failure?.refusedInput == true && longID.transactionID.isEmpty)
        let longBody = await offline.parseWebhook(WebhookRequest(body: Array("id=ex2&status=paid&pad=\(String(repeating: "p", count: 600))".utf8)))
        #expect(longBody.failure?.refusedInput == true)

        // Online through the host: an unreachable gateway is NOT_SENT, a reset is UNKNOWN.
        let down = try await reg.makeInstance(gateway: "example_c", config: GatewayConfig(baseURL: "http://127.0.0.1:1"))
        #expect(await down.createPix(.sample(uniqueReference("d"))).outcome == .notSent)
        let server = try ReplayServer()
        defer { server.stop() }
        let online = try await reg.makeInstance(gateway: "example_c", config: GatewayConfig(credentials: ["api_key": "k"], baseURL: "http://127.0.0.1:\(server.port)"))
        server.script([.reset])
        #expect(await online.createPix(.sample(uniqueReference("r"))).outcome == .unknown)
        server.script([.answer(status: 201, headers: ["X-Charge-Id": "ch_9"], body: Array(BRCode.build(key: "k@x.invalid", amountCents: 1990, name: "X", city: "Y", txid: "ch9").utf8))])
        let ok = await online.createPix(.sample(uniqueReference("ok")))
        #expect(ok.outcome == .created && ok.transactionID == "ch_9")
        // A charge id that does not fit is reported (UNKNOWN, for the reconciler), not cut.
        server.script([.answer(status: 201, headers: ["X-Charge-Id": String(repeating: "9", count: 200)], body: Array("x".utf8))])
        let cut = await online.createPix(.sample(uniqueReference("cut")))
        #expect(cut.outcome == .unknown && cut.transactionID.isEmpty && cut.message.contains("X-Charge-Id"), "\(cut)")
        #expect(server.received.first?.headers["authorization"] == "Bearer k")
    }
}
