import MetaCAPI
import PluginHost
import Synchronization

/// `GatewayProvider` over the process's `GatewayRegistry`: one instance per distinct account
/// configuration, created on first use and kept (plugins are never unloaded).
public final class RegistryGateways: GatewayProvider {
    private let registry: GatewayRegistry
    private let cache = Mutex<[String: GatewayInstance]>([:])

    public init(registry: GatewayRegistry) { self.registry = registry }

    public func instance(for account: BotGatewayAccount) async throws -> any PaymentGateway {
        let key = Self.key(account)
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let made: GatewayInstance
        do {
            made = try await registry.makeInstance(gateway: account.gateway, config: account.config,
                                                   label: "bot \(account.botID) / \(account.gateway)")
        } catch {
            throw error
        }
        return cache.withLock { c in
            if let raced = c[key] { return raced }
            c[key] = made
            return made
        }
    }

    public var listings: [GatewayListing] { registry.listings }

    public func plugin(named name: String) -> PluginInfo? { registry.plugin(named: name) }

    /// Identifies a configuration by the SHA-256 of a canonical encoding (every field length-
    /// prefixed, maps sorted by key), so the cache holds no credential in its keys and no two
    /// configurations share an encoding.
    static func key(_ a: BotGatewayAccount) -> String {
        var bytes: [UInt8] = []
        func field(_ s: String) {
            let u = Array(s.utf8)
            bytes += Array(String(u.count).utf8) + [UInt8(ascii: ":")] + u
        }
        func map(_ tag: String, _ m: [String: String]) {
            field(tag)
            field(String(m.count))
            for (k, v) in m.sorted(by: { $0.key < $1.key }) { field(k); field(v) }
        }
        field("gateway-account-v1")
        field(a.gateway)
        field(a.config.baseURL)
        map("credentials", a.config.credentials)
        map("options", a.config.options)
        return SHA256Hex.of(bytes)
    }
}
