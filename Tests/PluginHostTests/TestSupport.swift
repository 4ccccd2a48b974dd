import Foundation
import HTTPClient
import PluginHost
import PluginKit
import RPC
import Testing

/// Paths, builds and processes the plugin tests need.
enum TestEnv {
    /// The repository root (this file is Tests/PluginHostTests/TestSupport.swift).
    static let repoRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// Where SwiftPM put the plugin libraries: `PIXTRACK_TEST_PLUGIN_DIR`, else the directory of
    /// the test binary (`.build/<config>/`), which `swift build`/`swift test` fill.
    static let buildDir: String = {
        if let d = ProcessInfo.processInfo.environment["PIXTRACK_TEST_PLUGIN_DIR"], !d.isEmpty { return d }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // XCTest bundles on Linux are plain executables in .build/<config>/; step out of any bundle.
        while dir.path.contains(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir.path
    }()

    static let quiet = Logger(minimum: .error)

    /// A built plugin; fails the test with instructions when it is missing.
    static func plugin(_ name: String) throws -> String {
        let path = "\(buildDir)/lib\(name).so"
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestFailure("\(path) is missing: run `swift build` (all products) before `swift test`, or set PIXTRACK_TEST_PLUGIN_DIR")
        }
        return path
    }

    /// `inProcess`: the plugin is loaded into the test process (shared by every registry of the
    /// process, as before runners) instead of a runner of its own.
    static func options(timeoutMs: Int64 = 15_000, maxThreads: Int = 256, inProcess: Bool = false) -> GatewayRegistry.Options {
        var o = GatewayRegistry.Options(pluginDirectory: buildDir)
        o.callTimeoutMs = timeoutMs
        // The short call deadlines some tests use are for the calls they time: `create` (a runner
        // round trip, on a loaded machine) keeps a generous one.
        o.createTimeoutMs = max(timeoutMs, 15_000)
        o.maxPluginThreads = maxThreads
        o.isolation.runners = !inProcess
        return o
    }

    /// One plugin file loaded on its own.
    /// Loading (dlopen, hashing) blocks: it runs on a thread of its own, off the cooperative pool.
    static func registry(path: String, timeoutMs: Int64 = 15_000, maxThreads: Int = 256, inProcess: Bool = false) async throws -> GatewayRegistry {
        let o = options(timeoutMs: timeoutMs, maxThreads: maxThreads, inProcess: inProcess)
        return try await offPool { try GatewayRegistry.single(path: path, options: o, logger: quiet) }
    }

    /// `GatewayRegistry.scan` off the cooperative pool.
    static func scan(_ options: GatewayRegistry.Options) async throws -> GatewayRegistry {
        try await offPool { GatewayRegistry.scan(options: options, logger: quiet) }
    }

    static func instance(_ name: String, config: GatewayConfig = GatewayConfig(), timeoutMs: Int64 = 15_000,
                         maxThreads: Int = 256, inProcess: Bool = false) async throws -> GatewayInstance {
        let path = try plugin(name)
        let reg = try await registry(path: path, timeoutMs: timeoutMs, maxThreads: maxThreads, inProcess: inProcess)
        return try await reg.makeInstance(gateway: reg.plugins[0].name, config: config)
    }

    /// A fresh private directory.
    static func tempDir() -> String {
        var template = Array("/tmp/pixtrack-plugin-test-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }!
        return String(cString: p)
    }

    /// Tests/fixtures/plugins/misbehaving.c built with FIXTURE_MODE=mode, copied to dir/name (a
    /// new file, so a new library for the loader). Each mode is compiled once per test run.
    static func compileFixture(mode: Int, dir: String, name: String) async throws -> String {
        let built = try await FixtureCache.shared.path(mode: mode)
        let out = "\(dir)/\(name)"
        try FileManager.default.copyItem(atPath: built, toPath: out)
        return out
    }

    static func buildFixture(mode: Int, out: String) async throws {
        try await run("/usr/bin/env", ["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-DFIXTURE_MODE=\(mode)",
                                 "-I", "\(repoRoot)/Sources/GatewayABI/include", "-I", "\(repoRoot)/Sources/PixTrackProto/include",
                                 "\(repoRoot)/Tests/fixtures/plugins/misbehaving.c",
                                 "\(repoRoot)/Sources/PixTrackProto/pixtrack/v1/gateway.pb-c.c", "-lprotobuf-c", "-o", out])
    }

    static func run(_ tool: String, _ args: [String], cwd: String? = nil) async throws {
        try await offPool { try runBlocking(tool, args, cwd: cwd) }
    }

    private static func runBlocking(_ tool: String, _ args: [String], cwd: String?) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let err = Pipe()
        p.standardError = err
        try p.run()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw TestFailure("\(args.prefix(2).joined(separator: " ")) failed: \(String(decoding: stderr, as: UTF8.self))")
        }
    }
}

/// Runs blocking work (processes, loopback HTTP) on a thread of its own, so tests never block the
/// small cooperative pool the host's async API and other tests need.
func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread.detachNewThread { c.resume(with: Result { try work() }) }
    }
}

/// Compiled fixture plugins, one per mode, shared by every test of the run.
actor FixtureCache {
    static let shared = FixtureCache()
    private let dir = TestEnv.tempDir()
    private var built: [Int: Task<String, any Error>] = [:]

    func path(mode: Int) async throws -> String {
        if let t = built[mode] { return try await t.value }
        let out = "\(dir)/fixture_\(mode).so"
        let t = Task { try await TestEnv.buildFixture(mode: mode, out: out); return out }
        built[mode] = t
        return try await t.value
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// One fake-gateways process (Tests/fakes/fake_gateways.py) for one test: its own ledger and
/// faults, stopped (by its pid) when the test ends.
final class FakeGateways: @unchecked Sendable {
    let process: Process
    let port: Int
    private let http = HTTPClient()

    static let basePaths = ["atomopay": "/api/public/v1", "paradise": "/api/v1", "umbrellapag": "/api", "syncpay": ""]
    static let credentials: [String: [String: String]] = [
        "atomopay": ["api_token": "atomo-token"], "paradise": ["api_key": "paradise-key"],
        "umbrellapag": ["api_key": "umbrella-key"], "syncpay": ["client_id": "sync-id", "client_secret": "sync-secret"],
    ]
    static let options: [String: [String: String]] = [
        "atomopay": ["offer_hash": "offer1", "product_hash": "prod1"], "paradise": ["product_hash": "prodP"],
    ]

    static func start() async throws -> FakeGateways { try await offPool { try FakeGateways() } }

    private init() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "\(TestEnv.repoRoot)/Tests/fakes/fake_gateways.py", "--port", "0"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        var line = Data()
        while !line.contains(0x0A) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            p.terminate()
            throw TestFailure("fake_gateways.py did not print its port")
        }
        process = p
        self.port = port
    }

    deinit { stop() }

    /// SIGKILL by pid: a child spawned from a dispatch thread inherits its blocked signals, so
    /// SIGTERM may never arrive. Foundation reaps the child.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    func baseURL(_ gateway: String) -> String { "http://127.0.0.1:\(port)/\(gateway)\(Self.basePaths[gateway] ?? "")" }

    func config(_ gateway: String, credentials: [String: String]? = nil, options: [String: String] = [:]) -> GatewayConfig {
        GatewayConfig(credentials: credentials ?? Self.credentials[gateway] ?? [:], baseURL: baseURL(gateway),
                      options: (Self.options[gateway] ?? [:]).merging(options) { $1 })
    }

    @discardableResult
    func control(_ path: String, _ body: JSON? = nil) async throws -> JSON {
        let http = self.http, port = self.port
        let r = try await offPool { http.execute(HTTPClientRequest(method: body == nil ? "GET" : "POST", url: "http://127.0.0.1:\(port)/_control/\(path)",
                                               headers: [HTTPClientHeader("Content-Type", "application/json")], body: body?.bytes ?? [])) }
        guard r.status == 200, let j = try? JSON.parse(r.body) else { throw TestFailure("control \(path): HTTP \(r.status) \(r.text)") }
        return j
    }

    func fault(_ gateway: String, op: String = "create", kind: String, extra: [String: JSON] = [:]) async throws {
        var f: [String: JSON] = ["gateway": .string(gateway), "op": .string(op), "kind": .string(kind)]
        f.merge(extra) { $1 }
        try await control("fault", .object(f))
    }

    func ledger(_ gateway: String) async throws -> [JSON] {
        try await control("ledger?gateway=\(gateway)")["charges"]?.array ?? []
    }

    func requests(_ gateway: String) async throws -> [JSON] {
        try await control("requests?gateway=\(gateway)")["requests"]?.array ?? []
    }

    func setStatus(_ gateway: String, id: String, _ status: String) async throws {
        try await control("status", .object(["gateway": .string(gateway), "id": .string(id), "status": .string(status)]))
    }
}

extension CreatePixRequest {
    static func sample(_ reference: String, cents: Int64 = 1990) -> CreatePixRequest {
        CreatePixRequest(reference: reference, amountCents: cents, description: "Curso",
                         customer: GatewayCustomer(name: "Maria Silva", email: "maria@example.com", phone: "+55 11 98765-4321",
                                                   document: "123.456.789-09"),
                         postbackURL: "https://hooks.example.invalid/webhooks/x/secret")
    }
}

/// A unique reference per call, so tests sharing nothing can still share a sandbox ledger.
func uniqueReference(_ tag: String) -> String { "PAY-\(tag)-\(UUID().uuidString.prefix(8))" }
