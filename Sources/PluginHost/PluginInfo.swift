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
