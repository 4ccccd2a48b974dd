import Foundation
import PluginHost
import Testing

/// Fixture modes of Tests/fixtures/plugins/misbehaving.c.
enum Fixture: Int, CaseIterable {
    case good = 0, wrongMajor, newerMinor, noEntry, nullSlot, smallStruct, entryNull, badName
    case garbage, nullResult, huge, sleep, error, httpError, httpNotSent, badCRC, createFails
    case segv, abort, exit, leak, hang, segvCreate, probe, segvAll, chargeSegv, syscalls
}

@Suite struct LoaderTests {
    @Test func refusesEachBadFileWithAReasonAndLoadsTheRest() async throws {
        let dir = TestEnv.tempDir()
        let outside = TestEnv.tempDir()
        let fm = FileManager.default
        // Loadable control plugin, and a second file with the same plugin name.
        let good = try await TestEnv.compileFixture(mode: Fixture.good.rawValue, dir: dir, name: "a_good.so")
        try fm.copyItem(atPath: good, toPath: "\(dir)/b_duplicate_name.so")
        // ABI misbehaviours.
        let bad: [(Fixture, String)] = [(.wrongMajor, "ABI major 2"), (.newerMinor, "newer than this host"),
                                        (.noEntry, "missing entry symbol"), (.nullSlot, "create_pix"),
                                        (.smallStruct, "plugin table is"), (.entryNull, "returned NULL"),
                                        (.badName, "invalid plugin name")]
        for (f, _) in bad { _ = try await TestEnv.compileFixture(mode: f.rawValue, dir: dir, name: "fx_\(f).so") }
        // File-level refusals.
        try fm.copyItem(atPath: good, toPath: "\(dir)/world_writable.so")
        chmod("\(dir)/world_writable.so", 0o777)
        try fm.createDirectory(atPath: "\(dir)/directory.so", withIntermediateDirectories: false)
        let outsideFile = try await TestEnv.compileFixture(mode: Fixture.good.rawValue, dir: outside, name: "elsewhere.so")
        try fm.createSymbolicLink(atPath: "\(dir)/link_outside.so", withDestinationPath: outsideFile)
        try fm.createSymbolicLink(atPath: "\(dir)/link_inside.so", withDestinationPath: good)
        try Data("not an ELF file".utf8).write(to: URL(fileURLWithPath: "\(dir)/junk.so"))
        try Data("ignored: not .so".utf8).write(to: URL(fileURLWithPath: "\(dir)/README.txt"))

        let registry = try await TestEnv.scan(GatewayRegistry.Options(pluginDirectory: dir))
        #expect(registry.plugins.map(\.name) == ["fixture"])
        #expect(registry.plugins.first?.path.hasSuffix("/a_good.so") == true)
        #expect(registry.plugins.first?.sha256.count == 64)

        func reason(_ file: String) -> String {
            registry.failures.first { $0.path.hasSuffix("/" + file) }?.reason ?? "<not refused>"
        }
        for (f, text) in bad {
            #expect(reason("fx_\(f).so").contains(text), "\(f): \(reason("fx_\(f).so"))")
        }
        #expect(reason("world_writable.so").contains("world-writable"))
        #expect(reason("directory.so").contains("directory"))
        #expect(reason("link_outside.so").contains("outside the plugin directory"))
        #expect(reason("link_inside.so").contains("already loaded"))
        #expect(reason("b_duplicate_name.so").contains("duplicate plugin name"))
        #expect(reason("junk.so").contains("dlopen failed"))
        #expect(!registry.failures.contains { $0.path.hasSuffix("README.txt") })
        // ListGateways rows: one loaded, every refusal with its error.
        let rows = registry.listings
        #expect(rows.filter(\.loaded).count == 1)
        #expect(rows.filter { !$0.loaded }.allSatisfy { !$0.loadError.isEmpty })
    }

    @Test func pinnedHashesAreEnforcedBeforeLoading() async throws {
        let dir = TestEnv.tempDir()
        _ = try await TestEnv.compileFixture(mode: Fixture.good.rawValue, dir: dir, name: "pinned.so")
        var options = GatewayRegistry.Options(pluginDirectory: dir)
        options.pinnedSHA256 = ["pinned.so": String(repeating: "0", count: 64)]
        let refused = try await TestEnv.scan(options)
        #expect(refused.plugins.isEmpty)
        #expect(refused.failures.first?.reason.contains("does not match the pinned") == true)
        let sha = refused.failures.first?.sha256 ?? ""
        options.pinnedSHA256 = GatewayRegistry.Options.parsePins("pinned.so=\(sha.uppercased()), other.so=abc")
        let accepted = try await TestEnv.scan(options)
        #expect(accepted.plugins.map(\.sha256) == [sha])
    }

    @Test func missingDirectoryIsReportedNotFatal() {
        let registry = GatewayRegistry.scan(options: GatewayRegistry.Options(pluginDirectory: "/nonexistent/pixtrack-plugins"),
                                            logger: TestEnv.quiet)
        #expect(registry.plugins.isEmpty)
        #expect(registry.failures.count == 1)
    }

    @Test func scansTheBuildDirectoryAndFindsEveryShippedPlugin() async throws {
        _ = try TestEnv.plugin("sandbox")
        let registry = try await TestEnv.scan(TestEnv.options())
        let names = Set(registry.plugins.map(\.name))
        #expect(names.isSuperset(of: ["atomopay", "paradise", "umbrellapag", "syncpay", "sandbox"]))
        for p in registry.plugins where names.contains(p.name) {
            #expect(p.abiMajor == 1 && p.abiMinor == 0)
            #expect(p.version == "1.0.0" || p.name == "fixture")
        }
        #expect(registry.plugin(named: "sandbox")?.supportsStatusByReference == true)
        #expect(registry.plugin(named: "atomopay")?.supportsStatusByReference == false)
    }

    @Test func envOptionsParse() throws {
        let o = try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/p", "PIXTRACK_PLUGIN_TIMEOUT_MS": "750",
                                                             "PIXTRACK_PLUGIN_SHA256": "liba.so=ABC"])
        #expect(o?.pluginDirectory == "/p")
        #expect(o?.callTimeoutMs == 750)
        #expect(o?.pinnedSHA256 == ["liba.so": "abc"])
        #expect(o?.isolation.runners == true && o?.isolation.memoryLimitMB == 2048)
        #expect(try GatewayRegistry.Options.fromEnvironment([:]) == nil)
        let trusted = try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/p", "PIXTRACK_PLUGIN_IN_PROCESS": "sandbox, libx.so",
                                                                   "PIXTRACK_PLUGIN_MEMORY_LIMIT_MB": "512"])
        #expect(trusted?.isolation.inProcess == ["sandbox", "libx.so"] && trusted?.isolation.memoryLimitMB == 512)
        #expect(try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/p", "PIXTRACK_PLUGIN_ISOLATION": "in-process"])?.isolation.runners == false)
        #expect(throws: GatewayInstanceError.self) { try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/p", "PIXTRACK_PLUGIN_ISOLATION": "docker"]) }
        #expect(throws: GatewayInstanceError.self) { try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/p", "PIXTRACK_PLUGIN_MEMORY_LIMIT_MB": "3"]) }
    }
}

@Suite struct MisbehavingPluginTests {
    /// Compiles one fixture into its own directory and makes an instance of it.
    static func instance(_ f: Fixture, timeoutMs: Int64 = 15_000, maxThreads: Int = 256, baseURL: String = "") async throws -> GatewayInstance {
        let path = try await TestEnv.compileFixture(mode: f.rawValue, dir: TestEnv.tempDir(), name: "libfixture_\(f).so")
        let reg = try await TestEnv.registry(path: path, timeoutMs: timeoutMs, maxThreads: maxThreads)
        return try await reg.makeInstance(gateway: "fixture", config: GatewayConfig(credentials: ["api_key": "k3y-secret"], baseURL: baseURL))
    }

    @Test func garbageNullAndHugeResultsAreUnknown() async throws {
        for f in [Fixture.garbage, .nullResult, .huge, .badCRC] {
            let o = try await Self.instance(f).createPix(.sample(uniqueReference("mis")))
            #expect(o.outcome == .unknown, "\(f)")
            #expect(o.failure?.kind == .invalidResult, "\(f): \(String(describing: o.failure))")
        }
        let garbageStatus = try await Self.instance(.garbage).getStatus(StatusQuery(transactionID: "x"))
        #expect(garbageStatus.status == .unknown)
        let webhook = try await Self.instance(.good).parseWebhook(WebhookRequest(body: Array("{}".utf8)))
        #expect(webhook.status == .unknown)  // status number 99 is not a status this host knows
        #expect(webhook.transactionID == "fixture-1")
    }

    @Test func overrunningPluginIsAbandonedAndTheHostStaysHealthy() async throws {
        let slow = try await Self.instance(.sleep, timeoutMs: 300)
        let start = ContinuousClock.now
        let o = await slow.createPix(.sample(uniqueReference("slow")))
        #expect(o.outcome == .unknown)
        #expect(o.failure?.kind == .timeout)
        // `.timeout` proves the host answered at its deadline, not when the plugin's 1.5 s sleep ended.
        #expect(ContinuousClock.now - start < .seconds(10))
        let s = await slow.getStatus(StatusQuery(transactionID: "x"))
        #expect(s.status == .unknown && s.failure?.kind == .timeout)
        // Other plugins keep working while the slow one's threads are still asleep.
        let good = try await Self.instance(.good)
        #expect(await good.createPix(.sample(uniqueReference("ok"))).outcome == .created)
    }

    @Test func saturatedPluginThreadsFailFastAsNotSent() async throws {
        let path = try await TestEnv.compileFixture(mode: Fixture.sleep.rawValue, dir: TestEnv.tempDir(), name: "libfixture_busy.so")
        let reg = try await TestEnv.registry(path: path, timeoutMs: 300, maxThreads: 2)
        let slow = try await reg.makeInstance(gateway: "fixture", config: GatewayConfig())
        async let a = slow.createPix(.sample(uniqueReference("a")))
        async let b = slow.createPix(.sample(uniqueReference("b")))
        for _ in 0..<200 where reg.busyPluginThreads < 2 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(reg.busyPluginThreads == 2)
        let c = await slow.createPix(.sample(uniqueReference("c")))
        #expect(c.outcome == .notSent)
        #expect(c.failure?.kind == .busy)
        let (ra, rb) = await (a, b)
        #expect(ra.outcome == .unknown && rb.outcome == .unknown)
    }

    @Test func aPluginThatHangsNeverTakesAnotherPluginsQuota() async throws {
        // One directory, two plugins: a fixture whose calls sleep past the deadline, and the sandbox.
        let dir = TestEnv.tempDir()
        _ = try await TestEnv.compileFixture(mode: Fixture.sleep.rawValue, dir: dir, name: "libfixture_hang.so")
        try FileManager.default.copyItem(atPath: "\(TestEnv.buildDir)/libsandbox.so", toPath: "\(dir)/libsandbox.so")
        var o = TestEnv.options(timeoutMs: 300, maxThreads: 2)
        o.pluginDirectory = dir
        let opts = o
        let reg = try await offPool { GatewayRegistry.scan(options: opts, logger: TestEnv.quiet) }
        #expect(Set(reg.plugins.map(\.name)) == ["fixture", "sandbox"])
        let hung = try await reg.makeInstance(gateway: "fixture", config: GatewayConfig())
        async let a = hung.createPix(.sample(uniqueReference("h1")))
        async let b = hung.createPix(.sample(uniqueReference("h2")))
        for _ in 0..<200 where reg.callsInFlight(plugin: "fixture") < 2 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(reg.callsInFlight(plugin: "fixture") == 2)
        // The fixture's quota is spent: its next call fails fast ...
        let c = await hung.createPix(.sample(uniqueReference("h3")))
        #expect(c.failure?.kind == .busy)
        // ... while the sandbox has all of its own.
        let sandbox = try await reg.makeInstance(gateway: "sandbox", config: GatewayConfig(options: ["merchant_name": "Loja"]))
        for i in 0..<2 {
            let ok = await sandbox.createPix(.sample(uniqueReference("s\(i)")))
            #expect(ok.outcome == .created, "\(ok.message) \(String(describing: ok.failure))")
        }
        #expect(reg.callsInFlight(plugin: "sandbox") == 0)
        _ = await (a, b)
    }

    @Test func errorStatusIsNotSentOnlyWhenNothingLeft() async throws {
        let quiet = try await Self.instance(.error).createPix(.sample(uniqueReference("err")))
        #expect(quiet.outcome == .notSent)
        #expect(quiet.failure?.code == 5)
        #expect(quiet.failure?.message == "gateway unreachable")

        let fake = try await FakeGateways.start()
        let sentThenFailed = try await Self.instance(.httpError, baseURL: fake.baseURL("paradise") + "/anything").createPix(.sample(uniqueReference("he")))
        #expect(sentThenFailed.outcome == .unknown)
        let lyingNotSent = try await Self.instance(.httpNotSent, baseURL: fake.baseURL("paradise") + "/anything").createPix(.sample(uniqueReference("hn")))
        #expect(lyingNotSent.outcome == .unknown)
        #expect(lyingNotSent.failure?.kind == .invalidResult)
        // The same plugin calling an unreachable URL really did not send: NOT_SENT is believed.
        let unreachable = try await Self.instance(.httpNotSent, baseURL: "http://127.0.0.1:1/x").createPix(.sample(uniqueReference("hu")))
        #expect(unreachable.outcome == .notSent)
    }

    @Test func createFailureIsAnErrorWithThePluginsMessage() async throws {
        await #expect(throws: GatewayInstanceError.self) { _ = try await Self.instance(.createFails) }
        do {
            _ = try await Self.instance(.createFails)
        } catch {
            #expect((error as? GatewayInstanceError)?.message.contains("missing credential 'api_key'") == true)
        }
    }
}
