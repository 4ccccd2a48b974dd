@_exported import JSONKit
@_exported import BRCode

/// What a Swift gateway plugin implements; `PluginExport.entry` turns it into the C table.
///
/// One value of the conforming type is one gateway account (`create`); the host calls it from
/// several threads at once, so it must be thread-safe (immutable, or guarded by a lock).
/// Never trap (force-unwrap, out-of-range index, arithmetic overflow on gateway data): a trap
/// takes the whole server down. Throw `PluginError` or return an UNKNOWN result instead.
public protocol GatewayPlugin: AnyObject, Sendable {
    /// 1-32 chars of `[a-z0-9_-]`: the gateway's name in configuration and webhook URLs.
    static var name: String { get }
    static var version: String { get }
    static var summary: String { get }
    static var capabilities: PluginCapabilities { get }

    /// Validates the configuration (credentials arrive here and only here).
    init(config: PluginConfiguration, host: HostCall) throws(PluginError)

    func createPix(_ request: PixRequest, host: HostCall) throws(PluginError) -> PixResult
    func getStatus(_ request: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult
    func parseWebhook(_ request: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult
}

/// `PT_CAP_*` bits.
public struct PluginCapabilities: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `getStatus` works with only a reference.
    public static let statusByReference = PluginCapabilities(rawValue: 1 << 0)
    /// `parseWebhook` understands the gateway's webhooks.
    public static let webhooks = PluginCapabilities(rawValue: 1 << 1)
}
