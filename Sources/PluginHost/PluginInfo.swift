/// A loaded plugin, as `PaymentService/ListGateways` and the start-up log show it.
public struct PluginInfo: Sendable, Hashable {
    /// Gateway name from the plugin table (e.g. `"atomopay"`), unique among loaded plugins.
    public let name: String
    public let version: String
    public let description: String
    /// The ABI version the plugin was compiled against.
    public let abiMajor: UInt32
    public let abiMinor: UInt32
    /// Canonical path of the file that was loaded (symlinks resolved).
    public let path: String
    /// Lowercase hex SHA-256 of that file.
    public let sha256: String
    /// `PT_CAP_*` bits.
    public let capabilities: UInt64

    /// `getStatus` works with only `StatusQuery.reference` (finds charges whose answer was lost).
    public var supportsStatusByReference: Bool { capabilities & 1 != 0 }
    /// `parseWebhook` understands this gateway's webhooks.
    public var supportsWebhooks: Bool { capabilities & 2 != 0 }
}

/// A plugin file that was refused, and why (shown by ListGateways with `loaded = false`).
public struct PluginLoadFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The path as found in the plugin directory (or as given).
    public let path: String
    public let reason: String
    /// Empty when the file could not be read.
    public let sha256: String

    public init(path: String, reason: String, sha256: String = "") {
        self.path = path
        self.reason = reason
        self.sha256 = sha256
    }

    public var description: String { "\(path): \(reason)" }
}

/// One row of `ListGateways`: a loaded plugin or a refused file.
public struct GatewayListing: Sendable, Hashable {
    public var name: String
    public var version: String
    public var abiMajor: UInt32
    public var abiMinor: UInt32
    public var path: String
    public var sha256: String
    public var loaded: Bool
    public var loadError: String
    /// "runner" or "in-process" ("" for a refused file).
    public var isolation: String = ""
    /// False while a runner plugin keeps crashing (its calls fail fast until one succeeds).
    public var healthy: Bool = true
    public var runnerRestarts: Int = 0
}
