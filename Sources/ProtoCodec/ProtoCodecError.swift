/// Why a message could not be encoded or decoded.
public struct ProtoCodecError: Error, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "ProtoCodecError: \(message)" }
}
