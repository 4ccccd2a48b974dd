/// Request or response metadata: ordered, case-insensitive keys (stored lowercased), repeatable.
///
/// Values of keys ending in `-bin` are binary and travel base64-encoded on the wire; they are kept
/// here exactly as received (the encoded text).
public struct Metadata: Sendable, Hashable, Sequence {
    public private(set) var entries: [(key: String, value: String)]

    public init(_ entries: [(String, String)] = []) {
        self.entries = entries.map { (key: $0.0.lowercased(), value: $0.1) }
    }

    public mutating func add(_ key: String, _ value: String) {
        entries.append((key: key.lowercased(), value: value))
    }

    /// Appends without lowercasing: for transports that already guarantee lowercase names
    /// (HTTP/2 requires them).
    public mutating func add(lowercasedKey key: String, _ value: String) {
        entries.append((key: key, value: value))
    }

    /// The first value for `key`, if any.
    public subscript(_ key: String) -> String? {
        let k = key.lowercased()
        return entries.first { $0.key == k }?.value
    }

    /// Every value for `key`, in order.
    public func values(_ key: String) -> [String] {
        let k = key.lowercased()
        return entries.filter { $0.key == k }.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[(key: String, value: String)]> {
        entries.makeIterator()
    }

    public static func == (a: Metadata, b: Metadata) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0 == $1 }
    }

    public func hash(into hasher: inout Hasher) {
        for e in entries { hasher.combine(e.key); hasher.combine(e.value) }
    }
}
