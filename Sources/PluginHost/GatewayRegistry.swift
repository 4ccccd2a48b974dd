@_exported import PluginRuntime
import GatewayABI
import Glibc
import HTTPClient
import PixTrackMessages
import RPC

/// Why `GatewayRegistry.makeInstance` failed.
public struct GatewayInstanceError: Error, Sendable, Hashable, CustomStringConvertible, RPCErrorConvertible {
    public let gateway: String
    public let message: String
    public var description: String { "gateway \(gateway): \(message)" }
    /// The account cannot be used until an operator fixes it (the plugin's words stay in the log).
    public var rpcError: RPCError { RPCError(.failedPrecondition, "gateway \(gateway) account is not usable", cause: self) }
}

/// The loaded gateway plugins of this process, and the factory for their instances.
///
/// Built once at start-up from `PIXTRACK_PLUGIN_DIR`: each `*.so` there is checked and loaded,
/// a bad one is logged and skipped (the server still starts). Plugins are never unloaded.
public final class GatewayRegistry: Sendable {
    public struct Options: Sendable {
        /// The directory scanned for `*.so` files.
        public var pluginDirectory: String
        /// Pinned SHA-256 (hex) by file name (`"libatomopay.so"`) or full path: a file whose hash
        /// differs is refused before it is opened.
        public var pinnedSHA256: [String: String] = [:]
        /// Host deadline for every plugin call (create_pix, get_status, parse_webhook), ms.
        public var callTimeoutMs: Int64 = 5_000
        /// Host deadline for `create` (instance set-up), ms.
        public var createTimeoutMs: Int64 = 5_000
        /// Secrets of the host that plugins may see and echo (the webhook secrets inside postback
        /// URLs): hidden, with each account's credentials, from every message and log line.
        public var hostSecrets: [String] = []
        /// Policy of the HTTP requests plugins make (defaults, size limit).
        public var http = HTTPClient.Configuration()
        /// Per plugin: most of its calls in flight at once (overrunning, abandoned calls
        /// included); beyond it the call fails fast (`busy`) instead of queueing. Each plugin has
        /// its own quota, so one that hangs never takes another's capacity
        /// (`PIXTRACK_PLUGIN_MAX_IN_FLIGHT`).
        public var maxPluginThreads = 64
        /// Runner processes (the default) or in-process, per plugin.
        public var isolation = PluginIsolation()

        public init(pluginDirectory: String) {
            self.pluginDirectory = pluginDirectory
        }

        /// `PIXTRACK_PLUGIN_ISOLATION` (`runner`, the default, or `in-process`),
        /// `PIXTRACK_PLUGIN_IN_PROCESS` (plugin or file names kept in-process, comma-separated),
        /// `PIXTRACK_PLUGIN_RUNNER` (the runner binary), `PIXTRACK_PLUGIN_MEMORY_LIMIT_MB`.
        public static func isolation(_ env: [String: String]) throws(GatewayInstanceError) -> PluginIsolation {
            var i = PluginIsolation()
            switch env["PIXTRACK_PLUGIN_ISOLATION"] ?? "" {
            case "", "runner": i.runners = true
            case "in-process": i.runners = false
            case let other:
                throw GatewayInstanceError(gateway: "*", message: "PIXTRACK_PLUGIN_ISOLATION must be runner or in-process, got '\(other)'")
            }
            i.inProcess = Set((env["PIXTRACK_PLUGIN_IN_PROCESS"] ?? "").split(separator: ",").map { $0.split(separator: " ").joined() })
            if let path = env["PIXTRACK_PLUGIN_RUNNER"], !path.isEmpty { i.executable = path }
            if let v = env["PIXTRACK_PLUGIN_MEMORY_LIMIT_MB"], !v.isEmpty {
                guard let n = Int(v), n == 0 || (64...1_048_576).contains(n) else {
                    throw GatewayInstanceError(gateway: "*", message: "PIXTRACK_PLUGIN_MEMORY_LIMIT_MB must be 0 (none) or 64...1048576, got '\(v)'")
                }
                i.memoryLimitMB = n
            }
            return i
        }

        /// `PIXTRACK_PLUGIN_DIR` (required), `PIXTRACK_PLUGIN_SHA256` (`file=hex,file=hex`),
        /// `PIXTRACK_PLUGIN_TIMEOUT_MS` (every call's deadline, `create`'s included), the quota and isolation settings. `nil` when no
        /// directory is set.
        public static func fromEnvironment(_ env: [String: String]) throws(GatewayInstanceError) -> Options? {
            guard let dir = env["PIXTRACK_PLUGIN_DIR"], !dir.isEmpty else { return nil }
            var o = Options(pluginDirectory: dir)
            o.pinnedSHA256 = parsePins(env["PIXTRACK_PLUGIN_SHA256"] ?? "")
            if let t = env["PIXTRACK_PLUGIN_TIMEOUT_MS"].flatMap({ Int64($0) }), t > 0 {
                o.callTimeoutMs = t
                o.createTimeoutMs = t
            }
            if let n = env["PIXTRACK_PLUGIN_MAX_IN_FLIGHT"].flatMap({ Int($0) }), n > 0 {
                o.maxPluginThreads = min(n, 4096)
            }
            o.isolation = try isolation(env)
            return o
        }

        /// Parses `libfoo.so=abc123,libbar.so=def456`.
        public static func parsePins(_ text: String) -> [String: String] {
            var pins: [String: String] = [:]
            for item in text.split(separator: ",") {
                let kv = item.split(separator: "=", maxSplits: 1).map { String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
                if kv.count == 2, !kv[0].isEmpty { pins[kv[0]] = kv[1].lowercased() }
            }
            return pins
        }
    }

    public let options: Options
    private let loaded: [LoadedPlugin]
    /// Files refused, in directory order.
    public let failures: [PluginLoadFailure]
    private let logger: Logger
    /// One call quota per plugin, by name.
    private let threads: [String: PluginThreads]
    private let http: HTTPClient

    init(options: Options, loaded: [LoadedPlugin], failures: [PluginLoadFailure], logger: Logger) {
        self.options = options
        self.loaded = loaded
        self.failures = failures
        self.logger = logger
        var pools: [String: PluginThreads] = [:]
        for p in loaded { pools[p.info.name] = PluginThreads(maxThreads: options.maxPluginThreads) }
        self.threads = pools
        self.http = HTTPClient(configuration: options.http)
    }

    /// Scans `options.pluginDirectory` and loads every `*.so`, logging one line per file.
    public static func scan(options: Options, logger: Logger) -> GatewayRegistry {
        var loaded: [LoadedPlugin] = []
        var failures: [PluginLoadFailure] = []
        let dir = options.pluginDirectory
        guard let entries = listDirectory(dir) else {
            let failure = PluginLoadFailure(path: dir, reason: "cannot read plugin directory: \(PluginLoader.errnoText())")
            logger.error("plugin_directory_unreadable", ("path", dir), ("reason", failure.reason))
            return GatewayRegistry(options: options, loaded: [], failures: [failure], logger: logger)
        }
        var st = stat()
        if stat(dir, &st) == 0, st.st_mode & S_IWOTH != 0 {
            logger.warning("plugin_directory_world_writable", ("path", dir),
                           ("warning", "anyone can add plugins here; make it writable by the owner only"))
        }
        for name in entries where name.hasSuffix(".so") && !name.hasPrefix(".") {
            let path = dir.hasSuffix("/") ? dir + name : dir + "/" + name
            let pin = options.pinnedSHA256[name] ?? options.pinnedSHA256[path]
            let runner = options.isolation.runsInProcess(fileName: name) ? nil : (options.isolation, logger)
            switch PluginLoader.load(path: path, pluginDirectory: dir, pinnedSHA256: pin, runner: runner) {
            case .failure(let f):
                failures.append(f)
            case .success(let p):
                if let first = loaded.first(where: { $0.info.name == p.info.name }) {
                    let reason = first.info.path == p.info.path
                        ? "same file as \(first.info.path) (already loaded)"
                        : "duplicate plugin name '\(p.info.name)' (already loaded from \(first.info.path))"
                    failures.append(PluginLoadFailure(path: path, reason: reason, sha256: p.info.sha256))
                    p.runner?.stop()
                } else if p.runner != nil, options.isolation.inProcess.contains(p.info.name) {
                    // Named in PIXTRACK_PLUGIN_IN_PROCESS by its table name: load it here instead.
                    p.runner?.stop()
                    switch PluginLoader.load(path: path, pluginDirectory: dir, pinnedSHA256: pin) {
                    case .success(let local): loaded.append(local)
                    case .failure(let f): failures.append(f)
                    }
                } else {
                    loaded.append(p)
                }
            }
        }
        for p in loaded {
            let i = p.info
            logger.info("plugin_loaded", ("name", i.name), ("version", i.version), ("abi", "\(i.abiMajor).\(i.abiMinor)"),
                        ("path", i.path), ("sha256", i.sha256), ("isolation", p.runner == nil ? "in-process" : "runner"))
        }
        for f in failures {
            logger.warning("plugin_skipped", ("path", f.path), ("reason", f.reason))
        }
        return GatewayRegistry(options: options, loaded: loaded, failures: failures, logger: logger)
    }

    /// Loads one file, outside any directory scan (the conformance kit, tests). Throws the
    /// refusal when the file fails a check.
    public static func single(path: String, options: Options, logger: Logger) throws(PluginLoadFailure) -> GatewayRegistry {
        let runner = options.isolation.runsInProcess(fileName: String(path.split(separator: "/").last ?? "")) ? nil : (options.isolation, logger)
        switch PluginLoader.load(path: path, pluginDirectory: nil, pinnedSHA256: options.pinnedSHA256[path], runner: runner) {
        case .failure(let f): throw f
        case .success(let p): return GatewayRegistry(options: options, loaded: [p], failures: [], logger: logger)
        }
    }

    /// Loaded plugins, in directory order.
    public var plugins: [PluginInfo] { loaded.map(\.info) }

    public func plugin(named name: String) -> PluginInfo? { loaded.first { $0.info.name == name }?.info }

    /// Loaded plugins then refused files: the rows of `PaymentService/ListGateways`.
    public var listings: [GatewayListing] {
        loaded.map { p in
            let i = p.info
            let health = p.runner?.health
            return GatewayListing(name: i.name, version: i.version, abiMajor: i.abiMajor, abiMinor: i.abiMinor,
                                  path: i.path, sha256: i.sha256, loaded: true, loadError: "",
                                  isolation: p.runner == nil ? "in-process" : "runner", healthy: health?.healthy ?? true,
                                  runnerRestarts: health?.restarts ?? 0)
        } + failures.map { f in
            GatewayListing(name: "", version: "", abiMajor: 0, abiMinor: 0, path: f.path, sha256: f.sha256,
                           loaded: false, loadError: f.reason, isolation: "", healthy: false, runnerRestarts: 0)
        }
    }

    /// Plugin threads currently busy, all plugins (overrunning calls included).
    public var busyPluginThreads: Int { threads.values.reduce(0) { $0 + $1.active } }

    /// Runner mode: (healthy, restarts) of `plugin`'s runner; nil for an in-process plugin.
    public func runnerHealth(plugin: String) -> (healthy: Bool, restarts: Int)? {
        loaded.first { $0.info.name == plugin }?.runner.map { ($0.health.healthy, $0.health.restarts) }
    }

    /// The process id of `plugin`'s runner (nil: in-process or none running), for diagnostics.
    public func runnerPID(plugin: String) -> Int32? {
        loaded.first { $0.info.name == plugin }?.runner.flatMap { $0.pid == 0 ? nil : $0.pid }
    }

    /// Ends every runner process (tests, shutdown).
    public func stopRunners() { for p in loaded { p.runner?.stop() } }

    /// Calls of `plugin` in flight (overrunning ones included); its quota is `options.maxPluginThreads`.
    public func callsInFlight(plugin: String) -> Int { threads[plugin]?.active ?? 0 }

    /// Creates an instance of `gateway` for one account. The credentials in `config` reach the
    /// plugin here and only here, and are redacted from every host log line of the instance.
    public func makeInstance(gateway: String, config: GatewayConfig, label: String = "") async throws(GatewayInstanceError) -> GatewayInstance {
        guard let plugin = loaded.first(where: { $0.info.name == gateway }), let threads = threads[gateway] else {
            throw GatewayInstanceError(gateway: gateway, message: "no such plugin loaded")
        }
        guard let configBytes = try? GatewayProto.config(config).serializedBytes() else {
            throw GatewayInstanceError(gateway: gateway, message: "configuration could not be encoded (NUL in a value?)")
        }
        let env = InstanceEnvironment(pluginName: gateway, label: label.isEmpty ? gateway : label, logger: logger,
                                      redactor: Redactor(secrets: config.secretValues + options.hostSecrets), http: http)
        let call = PluginCall(environment: env, operation: "create", timeoutMs: options.createTimeoutMs)
        let completion = await threads.run(timeoutMs: options.createTimeoutMs, onTimeout: { call.close() }) {
            Self.create(plugin, call, configBytes)
        }
        switch completion {
        case .busy:
            throw GatewayInstanceError(gateway: gateway, message: "too many plugin calls running")
        case .timedOut where plugin.runner != nil:
            plugin.runner?.killIfStillRunning(call, graceMs: max(1_000, min(options.createTimeoutMs, 10_000)),
                                              reason: "create still running well past its \(options.createTimeoutMs) ms deadline")
            throw GatewayInstanceError(gateway: gateway, message: "create did not return within \(options.createTimeoutMs) ms")
        case .timedOut:
            // If create ever returns, its instance leaks: destroying it could race the plugin.
            throw GatewayInstanceError(gateway: gateway, message: "create did not return within \(options.createTimeoutMs) ms")
        case .finished(.failure(let failure)):
            throw GatewayInstanceError(gateway: gateway, message: env.redactor.redact(failure.text))
        case .finished(.success(let backend)):
            return GatewayInstance(plugin: plugin.info, backend: backend, environment: env, threads: threads, timeoutMs: options.callTimeoutMs)
        }
    }

    private static func create(_ plugin: LoadedPlugin, _ call: PluginCall, _ config: [UInt8]) -> Result<InstanceBackend, CreateFailureMessage> {
        if let runner = plugin.runner {
            defer { call.close() }
            return RemoteInstance.create(runner, config: config, call: call).map { .remote($0) }
        }
        let table = plugin.table!
        var instance: OpaquePointer? = nil
        var error = [CChar](repeating: 0, count: 512)
        let status = config.withUnsafeBufferPointer { cfg in
            error.withUnsafeMutableBufferPointer { err in
                table.pointee.create(table, HostAPI.table, HostAPI.handle(call), cfg.baseAddress, cfg.count,
                                     &instance, err.baseAddress, err.count)
            }
        }
        call.close()
        error[error.count - 1] = 0
        let message = error.withUnsafeBufferPointer { PluginTable.boundedString($0.baseAddress, 511) }
        guard status == PT_OK else {
            return .failure(CreateFailureMessage("create failed with status \(status)\(message.isEmpty ? "" : ": " + message)"))
        }
        guard let instance else { return .failure(CreateFailureMessage("create returned OK without an instance")) }
        return .success(.local(InstanceHandle(plugin: plugin, instance: instance)))
    }

    private static func listDirectory(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

/// A `create` failure message (an `Error` so it fits `Result`).
struct CreateFailureMessage: Error, Sendable {
    let text: String
    init(_ text: String) { self.text = text }
}
