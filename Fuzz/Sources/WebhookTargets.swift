import Foundation
import JSONKit
import PluginHost
import RPC

/// `webhook-<plugin>`: a gateway plugin's `parse_webhook`, called the way the host calls it —
/// the plugin loaded by `GatewayRegistry` (DESIGN §5 checks, ABI version checks), an instance
/// made with `makeInstance`, `GatewayInstance.parseWebhook` (request encoded by the host, the
/// plugin's result decoded and checked by the host, on a plugin thread under the deadline).
///
/// Input: `name: value` header lines, a NUL byte, the body; without a NUL, the body alone.
/// Invariants: the plugin answers in time and with something the host can read; it refuses a
/// body only with `PT_ERR_INVALID_ARGUMENT` (what the host answers 400); what it accepts names a
/// charge; what is not a JSON object it refuses (plugins that read JSON); the same webhook
/// parses the same way twice.
let webhookTargets = WebhookPlugin.all.map { plugin in
    FuzzTarget(name: "webhook-\(plugin.target)", summary: "parse_webhook of lib\(plugin.gateway).so through PluginHost",
               maxLength: 4096) {
        let instance = try plugin.instance()
        return { bytes in
            let webhook = webhookRequest(bytes)
            let outcome = blocking { await instance.parseWebhook(webhook) }
            trace("\(outcome)")
            check(outcome, of: webhook, plugin)
            let again = blocking { await instance.parseWebhook(webhook) }
            require(again == outcome, "the same webhook parsed twice: \(outcome) then \(again)")
        }
    }
}

struct WebhookPlugin: Sendable {
    /// The gateway name (the plugin table's `name`; the library is `lib<gateway>.so`).
    let gateway: String
    /// The fuzz target is `webhook-<target>` (the plugin's folder name under Plugins/).
    let target: String
    let config: GatewayConfig
    /// Reads JSON bodies (all but the C example, which reads `id=…&status=…`).
    let readsJSON: Bool

    init(_ gateway: String, target: String? = nil, credentials: [String: String] = [:], options: [String: String] = [:],
         readsJSON: Bool = true) {
        self.gateway = gateway
        self.target = target ?? gateway
        self.config = GatewayConfig(credentials: credentials, options: options)
        self.readsJSON = readsJSON
    }

    static let all = [
        WebhookPlugin("atomopay", credentials: ["api_token": "fuzz"], options: ["offer_hash": "offer"]),
        WebhookPlugin("paradise", credentials: ["api_key": "fuzz"], options: ["product_hash": "product"]),
        WebhookPlugin("umbrellapag", credentials: ["api_key": "fuzz"]),
        WebhookPlugin("syncpay", credentials: ["client_id": "fuzz", "client_secret": "fuzz"]),
        WebhookPlugin("sandbox"),
        WebhookPlugin("example_c", target: "example-c", readsJSON: false),
    ]

    /// Loads the plugin and makes one instance (no gateway is ever contacted: parsing only).
    func instance() throws -> GatewayInstance {
        let path = try Self.locate("lib\(gateway).so")
        // As pixtrackd reads them from its environment, with the plugin kept in this process:
        // libFuzzer sees its coverage and its crashes (a runner process would hide both).
        let env = ["PIXTRACK_PLUGIN_DIR": (path as NSString).deletingLastPathComponent,
                   "PIXTRACK_PLUGIN_ISOLATION": "in-process", "PIXTRACK_PLUGIN_TIMEOUT_MS": "10000"]
        guard let options = try Self.read(GatewayRegistry.Options.fromEnvironment, env) else {
            throw PluginMissing(description: "no plugin options from \(env)")
        }
        let registry = try GatewayRegistry.single(path: path, options: options, logger: Logger(minimum: .error))
        let config = config
        let made = blocking { () -> Result<GatewayInstance, GatewayInstanceError> in
            do throws(GatewayInstanceError) {
                return .success(try await registry.makeInstance(gateway: gateway, config: config))
            } catch {
                return .failure(error)
            }
        }
        return try made.get()
    }

    /// Calls `fromEnvironment` through a throwing function type: it compiles the same whether the
    /// host's version throws or not.
    private static func read(_ fromEnvironment: ([String: String]) throws -> GatewayRegistry.Options?,
                             _ env: [String: String]) throws -> GatewayRegistry.Options? {
        try fromEnvironment(env)
    }

    /// `PIXTRACK_FUZZ_PLUGIN_PATH` (directories, `:`-separated), else this executable's
    /// directory, where SwiftPM puts the plugin products it builds.
    static func locate(_ file: String) throws -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let env = ProcessInfo.processInfo.environment["PIXTRACK_FUZZ_PLUGIN_PATH"] ?? ""
        let dirs = env.split(separator: ":").map(String.init) + [(exe as NSString).deletingLastPathComponent]
        for dir in dirs where FileManager.default.fileExists(atPath: "\(dir)/\(file)") { return "\(dir)/\(file)" }
        throw PluginMissing(description: "\(file) not found in \(dirs.joined(separator: ", ")) (scripts/fuzz builds it; or set PIXTRACK_FUZZ_PLUGIN_PATH)")
    }
}

struct PluginMissing: Error, CustomStringConvertible {
    let description: String
}

/// Header lines, NUL, body (see `webhookTargets`).
private func webhookRequest(_ bytes: UnsafeRawBufferPointer) -> WebhookRequest {
    guard let nul = bytes.firstIndex(of: 0) else { return WebhookRequest(body: Array(bytes)) }
    let head = String(decoding: bytes[..<nul], as: UTF8.self)
    let headers = head.split(separator: "\n").compactMap { line -> GatewayHeader? in
        let kv = line.split(separator: ":", maxSplits: 1)
        guard kv.count == 2 else { return nil }
        return GatewayHeader(String(kv[0]), String(kv[1].drop { $0 == " " }))
    }
    return WebhookRequest(headers: headers, body: Array(bytes[(nul + 1)...]))
}

private func check(_ o: WebhookOutcome, of webhook: WebhookRequest, _ plugin: WebhookPlugin) {
    if let f = o.failure {
        require(f.refusedInput, "parse_webhook failed with \(f) instead of refusing with PT_ERR_INVALID_ARGUMENT")
        return
    }
    require(!(o.transactionID.isEmpty && o.reference.isEmpty && o.gatewayHash.isEmpty), "accepted a webhook that names no charge: \(o)")
    if plugin.readsJSON {
        let object = (try? JSON.parse(webhook.body))?.object
        require(object != nil, "accepted a body that is not a JSON object: \(o)")
    }
}
