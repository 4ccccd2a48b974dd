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

    /// Identifies a configuration without keeping its secrets readable in the key's shape.
    static func key(_ a: BotGatewayAccount) -> String {
        var parts = [a.gateway, a.config.baseURL]
        parts += a.config.credentials.sorted { $0.key < $1.key }.map { "c:\($0.key)=\($0.value)" }
        parts += a.config.options.sorted { $0.key < $1.key }.map { "o:\($0.key)=\($0.value)" }
        return parts.joined(separator: "\u{1}")
    }
}
