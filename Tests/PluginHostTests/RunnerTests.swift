import Foundation
import Glibc
@testable import PluginHost
import Testing

/// Plugins in runner processes (the default): a plugin that segfaults, aborts, exits, leaks or
/// hangs takes down only its runner. The host answers the safe outcome (create_pix UNKNOWN, the
/// others an error), starts the runner again, re-creates instances, reports a crash-looping
/// plugin unhealthy, and other plugins never notice.
@Suite struct RunnerTests {
    /// The fixture built in `mode`, alone in a directory, scanned with runner isolation.
    static func scan(_ mode: Fixture, timeoutMs: Int64 = 15_000, memoryMB: Int = 2048) async throws -> GatewayRegistry {
        let dir = TestEnv.tempDir()
        _ = try await TestEnv.compileFixture(mode: mode.rawValue, dir: dir, name: "libfixture.so")
        var o = TestEnv.options(timeoutMs: timeoutMs)
        o.pluginDirectory = dir
        o.isolation.memoryLimitMB = memoryMB
        return try await TestEnv.scan(o)
    }

    static func instance(_ registry: GatewayRegistry) async throws -> GatewayInstance {
        try await registry.makeInstance(gateway: "fixture", config: GatewayConfig(credentials: ["api_key": "k3y-secret"]))
    }

    static func waitForRestart(_ registry: GatewayRegistry, beyond restarts: Int) async throws {
        let start = ContinuousClock.now
        while registry.runnerHealth(plugin: "fixture")?.restarts ?? 0 <= restarts {
            guard ContinuousClock.now - start < .seconds(15) else { throw TestFailure("the runner was not restarted") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func aSegfaultInCreatePixIsUnknownAndTheRunnerComesBack() async throws {
        let registry = try await Self.scan(.segv)
        defer { registry.stopRunners() }
        #expect(registry.listings.first?.isolation == "runner")
        let gw = try await Self.instance(registry)
        let pid = try #require(registry.runnerPID(plugin: "fixture"))
        // Odd amount: the plugin sent a request, then crashed. Even: crashed before any request.
        for cents: Int64 in [1991, 1990] {
            let before = registry.runnerHealth(plugin: "fixture")?.restarts ?? 0
            let o = await gw.createPix(.sample(uniqueReference("segv"), cents: cents))
            #expect(o.outcome == .unknown, "a charge may exist: the reconciler must settle it (\(cents))")
            #expect(o.failure?.kind == .crashed && o.failure?.message.contains("signal 11") == true, "\(String(describing: o.failure))")
            try await Self.waitForRestart(registry, beyond: before)
        }
        #expect(registry.runnerPID(plugin: "fixture") != pid, "a new process")
        // The same instance works again (created anew in the new runner): get_status is sound.
        #expect(await gw.getStatus(StatusQuery(transactionID: "fixture-1")).status == .pending)
    }

    /// A segfault in every function: each call gets its safe outcome (create_pix UNKNOWN, the
    /// others an error naming the signal), the runner comes back after each, and `destroy`
    /// crashing takes only the runner down. A plugin of another file, in the same registry,
    /// answers throughout and its runner is never restarted.
    @Test func aSegfaultInEachFunctionFailsThatCallOnly() async throws {
        let dir = TestEnv.tempDir()
        _ = try await TestEnv.compileFixture(mode: Fixture.segvAll.rawValue, dir: dir, name: "libfixture.so")
        try FileManager.default.copyItem(atPath: try TestEnv.plugin("sandbox"), toPath: "\(dir)/libsandbox.so")
        var o = TestEnv.options()
        o.pluginDirectory = dir
        let registry = try await TestEnv.scan(o)
        defer { registry.stopRunners() }
        #expect(Set(registry.plugins.map(\.name)) == ["fixture", "sandbox"])
        let sandbox = try await registry.makeInstance(gateway: "sandbox", config: GatewayConfig())
        let sandboxPID = try #require(registry.runnerPID(plugin: "sandbox"))
        func sandboxStillWorks() async {
            #expect(await sandbox.createPix(.sample(uniqueReference("bystander"))).outcome == .created)
        }
        let gw = try await Self.instance(registry)
        func crashed(_ f: GatewayCallFailure?, _ what: String) {
            #expect(f?.kind == .crashed && f?.message.contains("signal 11") == true, "\(what): \(String(describing: f))")
        }
        var restarts = registry.runnerHealth(plugin: "fixture")?.restarts ?? 0
        let c = await gw.createPix(.sample(uniqueReference("segv-all")))
        #expect(c.outcome == .unknown)
        crashed(c.failure, "create_pix")
        try await Self.waitForRestart(registry, beyond: restarts)
        await sandboxStillWorks()
        restarts += 1
        let s = await gw.getStatus(StatusQuery(transactionID: "x"))
        #expect(s.status == .unknown)
        crashed(s.failure, "get_status")
        try await Self.waitForRestart(registry, beyond: restarts)
        await sandboxStillWorks()
        restarts += 1
        let w = await gw.parseWebhook(WebhookRequest(body: Array("{}".utf8)))
        crashed(w.failure, "parse_webhook")
        try await Self.waitForRestart(registry, beyond: restarts)
        await sandboxStillWorks()
        restarts += 1
        // destroy: the last reference to a live instance goes; its runner dies, nobody's call.
        let doomed = try await Self.instance(registry)
        let pid = registry.runnerPID(plugin: "fixture")
        _ = consume doomed
        try await Self.waitForRestart(registry, beyond: restarts)
        #expect(registry.runnerPID(plugin: "fixture") != pid)
        await sandboxStillWorks()
        #expect(registry.runnerPID(plugin: "sandbox") == sandboxPID && registry.runnerHealth(plugin: "sandbox")?.restarts == 0)
        #expect(registry.callsInFlight(plugin: "fixture") == 0)
    }

    @Test func abortAndExitFailTheirCallOnly() async throws {
        let aborting = try await Self.scan(.abort)
        defer { aborting.stopRunners() }
        let a = try await Self.instance(aborting)
        let s = await a.getStatus(StatusQuery(transactionID: "x"))
        #expect(s.status == .unknown && s.failure?.kind == .crashed, "\(String(describing: s.failure))")
        #expect(s.failure?.message.contains("signal 6") == true, "\(String(describing: s.failure))")
        // create_pix of that plugin is fine: after the restart the instance is created again.
        #expect(await a.createPix(.sample(uniqueReference("after-abort"))).outcome == .created)

        let exiting = try await Self.scan(.exit)
        defer { exiting.stopRunners() }
        let e = try await Self.instance(exiting)
        let w = await e.parseWebhook(WebhookRequest(body: Array("{}".utf8)))
        #expect(w.failure?.kind == .crashed && w.failure?.message.contains("exited with status 3") == true, "\(String(describing: w.failure))")
        #expect(await e.createPix(.sample(uniqueReference("after-exit"))).outcome == .created)
    }

    @Test func aLeakStopsAtTheMemoryLimit() async throws {
        let registry = try await Self.scan(.leak, memoryMB: 256)
        defer { registry.stopRunners() }
        let gw = try await Self.instance(registry)
        let hostBefore = Self.rssMiB(getpid())
        let o = await gw.createPix(.sample(uniqueReference("leak")))
        #expect(o.outcome == .unknown && o.failure?.kind == .crashed, "\(String(describing: o.failure))")
        #expect(Self.rssMiB(getpid()) - hostBefore < 64, "the host did not take the leak")
    }

    /// The memory limit is for the plugin's data: under a tight one the runner still serves many
    /// calls at once (each on a thread with an 8 MiB stack), because malloc's per-thread arenas
    /// (64 MiB of address space each) are capped in the runner.
    @Test func aRunnerUnderATightMemoryLimitServesConcurrentCalls() async throws {
        let registry = try await Self.scan(.sleep, memoryMB: 512)
        defer { registry.stopRunners() }
        let gw = try await Self.instance(registry)
        let outcomes = await withTaskGroup(of: CreatePixOutcome.self) { group in
            for i in 0..<24 { group.addTask { await gw.createPix(.sample(uniqueReference("tight\(i)"))) } }
            var all: [CreatePixOutcome] = []
            for await o in group { all.append(o) }
            return all
        }
        #expect(outcomes.allSatisfy { $0.outcome == .created }, "\(outcomes.compactMap { $0.failure?.message })")
        #expect(registry.runnerHealth(plugin: "fixture")?.restarts == 0)
    }

    @Test func aHungCallIsAbandonedThenItsRunnerKilledAndTheSlotReturns() async throws {
        let registry = try await Self.scan(.hang, timeoutMs: 300)
        defer { registry.stopRunners() }
        let gw = try await Self.instance(registry)
        let before = registry.runnerHealth(plugin: "fixture")?.restarts ?? 0
        let o = await gw.createPix(.sample(uniqueReference("hang")))
        #expect(o.outcome == .unknown && o.failure?.kind == .timeout)
        // Still inside the plugin after the grace (1 s): killed, restarted, the slot back.
        try await Self.waitForRestart(registry, beyond: before)
        #expect(registry.callsInFlight(plugin: "fixture") == 0)
        #expect(await gw.getStatus(StatusQuery(transactionID: "x")).status == .pending)
    }

    @Test func aPluginThatCrashesInCreateIsRefusedAndStaysLoaded() async throws {
        let registry = try await Self.scan(.segvCreate)
        defer { registry.stopRunners() }
        await #expect(throws: GatewayInstanceError.self) { try await Self.instance(registry) }
        #expect(registry.plugins.map(\.name) == ["fixture"])
    }

    @Test func aCrashLoopIsUnhealthyAndFailsFastUntilACallSucceeds() async throws {
        let registry = try await Self.scan(.segv)
        defer { registry.stopRunners() }
        let gw = try await Self.instance(registry)
        for i in 0..<3 {
            let before = registry.runnerHealth(plugin: "fixture")?.restarts ?? 0
            _ = await gw.createPix(.sample(uniqueReference("loop\(i)")))
            if i < 2 { try await Self.waitForRestart(registry, beyond: before) }
        }
        #expect(registry.runnerHealth(plugin: "fixture")?.healthy == false)
        #expect(registry.listings.first?.healthy == false)
        // While it is down, a call never reaches the plugin: NOT_SENT, at once.
        if registry.runnerPID(plugin: "fixture") == nil {
            let start = ContinuousClock.now
            let o = await gw.createPix(.sample(uniqueReference("fast")))
            #expect(o.outcome == .notSent && o.failure?.kind == .crashed)
            #expect(ContinuousClock.now - start < .seconds(1))
        }
        // Once restarted, a call that succeeds makes it healthy again.
        try await Self.waitForRestart(registry, beyond: 2)
        #expect(await gw.getStatus(StatusQuery(transactionID: "x")).status == .pending)
        #expect(registry.runnerHealth(plugin: "fixture")?.healthy == true)
    }

    @Test func anUnhealthyPluginIsProbedOneCallAtATime() async throws {
        let registry = try await Self.scan(.segv)
        defer { registry.stopRunners() }
        let gw = try await Self.instance(registry)
        for i in 0..<3 {
            let before = registry.runnerHealth(plugin: "fixture")?.restarts ?? 0
            _ = await gw.createPix(.sample(uniqueReference("probe-loop\(i)")))
            try await Self.waitForRestart(registry, beyond: before)
        }
        #expect(registry.runnerHealth(plugin: "fixture")?.healthy == false)
        // A runner is up again; five calls at once: at most one reaches the plugin (and crashes
        // it: UNKNOWN), the others are never sent (NOT_SENT).
        let outcomes = await withTaskGroup(of: CreatePixOutcome.self) { group in
            for i in 0..<5 { group.addTask { await gw.createPix(.sample(uniqueReference("probe\(i)"))) } }
            var all: [CreatePixOutcome] = []
            for await o in group { all.append(o) }
            return all
        }
        #expect(outcomes.filter { $0.outcome == .unknown }.count <= 1, "\(outcomes.map(\.outcome))")
        #expect(outcomes.filter { $0.outcome == .notSent && $0.failure?.kind == .crashed }.count >= 4, "\(outcomes.map { $0.failure?.message ?? "" })")
    }

    @Test func theRunnerKeepsNothingItDoesNotNeed() async throws {
        let registry = try await Self.scan(.good)
        defer { registry.stopRunners() }
        let pid = try #require(registry.runnerPID(plugin: "fixture"))
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        #expect(status.contains("NoNewPrivs:\t1"))
        #expect(status.contains("Seccomp:\t2"), "the system-call filter is installed")
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap(Int.init).sorted()
        #expect(fds.allSatisfy { $0 <= 4 || Self.isRuntimeDescriptor(pid: pid, fd: $0) }, "inherited descriptors: \(fds)")
        let environ = try String(contentsOfFile: "/proc/\(pid)/environ", encoding: .utf8)
        #expect(!environ.contains("DATABASE_URL") && !environ.contains("PIXTRACK_"), "the host's environment leaked")
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max address space") && $0.contains("\(2048 << 20)") }, "\(limits)")
        // Idle size of one runner, debug build (scripts/bench reports the release figure).
        let rss = Self.rssMiB(pid)
        print("plugin runner idle RSS (debug build): \(rss) MiB")
        #expect(rss <= 32)
    }

    /// What the runner's seccomp filter refuses, seen from inside a plugin: its own network
    /// sockets, running programs, tracing; a Unix socket pair still works.
    @Test func aPluginInARunnerCannotOpenTheNetworkOrRunPrograms() async throws {
        let registry = try await Self.scan(.syscalls)
        defer { registry.stopRunners() }
        let o = await (try Self.instance(registry)).createPix(.sample(uniqueReference("syscalls")))
        #expect(o.failure?.message == "inet=EPERM exec=EPERM ptrace=EPERM unix=ok", "\(String(describing: o.failure))")
        #expect(registry.runnerHealth(plugin: "fixture")?.restarts == 0, "refused, not killed")
    }

    @Test func inProcessIsolationKeepsTodaysMode() async throws {
        let dir = TestEnv.tempDir()
        _ = try await TestEnv.compileFixture(mode: Fixture.good.rawValue, dir: dir, name: "libtrusted.so")
        var o = TestEnv.options()
        o.pluginDirectory = dir
        o.isolation.inProcess = ["fixture"]
        let registry = try await TestEnv.scan(o)
        #expect(registry.listings.first?.isolation == "in-process")
        #expect(registry.runnerPID(plugin: "fixture") == nil)
        let gw = try await Self.instance(registry)
        #expect(await gw.createPix(.sample(uniqueReference("trusted"))).outcome == .created)
    }

    /// Descriptors the Swift runtime or libc open after start (eventfds, epoll, /dev/urandom), not inherited ones.
    static func isRuntimeDescriptor(pid: Int32, fd: Int) -> Bool {
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? ""
        return target.hasPrefix("anon_inode:") || target == "/dev/urandom"
    }

    static func rssMiB(_ pid: Int32) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
}
