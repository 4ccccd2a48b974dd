import PluginHost
import Testing
@testable import Payments

/// The gateway-instance cache is keyed by a hash: no credential is readable in its keys, and
/// configurations that differ anywhere (even where a naive join would collide) get other keys.
@Suite struct GatewayCacheKeyTests {
    func account(_ credentials: [String: String], base: String = "https://gw.example", options: [String: String] = [:]) -> BotGatewayAccount {
        BotGatewayAccount(botID: 1, gateway: "paradise", config: GatewayConfig(credentials: credentials, baseURL: base, options: options))
    }

    @Test func keysAreHashesOfTheWholeConfiguration() {
        let secret = "sk-live-cache-key-marker"
        let key = RegistryGateways.key(account(["api_key": secret]))
        #expect(key.utf8.count == 64 && key.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        #expect(!key.contains(secret) && !key.contains("api_key"))
        #expect(key == RegistryGateways.key(account(["api_key": secret])))
        let others = [
            account(["api_key": secret + "x"]),
            account(["api_key": secret], base: "https://gw.example/other"),
            account(["api_key": secret], options: ["product_hash": "p"]),
            account(["api_key": secret, "extra": ""]),
            // A separator inside a value cannot fake another field.
            account(["a": "1\u{1}c:b=2"]), account(["a": "1", "b": "2"]),
        ]
        let keys = Set(others.map(RegistryGateways.key) + [key])
        #expect(keys.count == others.count + 1)
    }
}
