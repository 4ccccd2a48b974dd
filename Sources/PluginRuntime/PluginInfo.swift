import Glibc

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

    package init(name: String, version: String, description: String, abiMajor: UInt32, abiMinor: UInt32, path: String,
                 sha256: String, capabilities: UInt64) {
        self.name = name
        self.version = version
        self.description = description
        self.abiMajor = abiMajor
        self.abiMinor = abiMinor
        self.path = path
        self.sha256 = sha256
        self.capabilities = capabilities
    }
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


/// The clocks plugins see (`now_unix_ms`, `monotonic_ms`) and deadlines use.
package enum Clock {
    package static func monotonicMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    package static func unixMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
