/// Which peers may tell us the client's address (`X-Forwarded-For`), e.g.
/// `PIXTRACK_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8,::1`. Empty: the header is ignored and the TCP
/// peer is the client.
public struct TrustedProxies: Sendable, Equatable {
    struct Network: Sendable, Equatable {
        let address: [UInt8]  // 4 or 16 bytes
        let prefix: Int
        func contains(_ ip: [UInt8]) -> Bool {
            guard ip.count == address.count else { return false }
            var bits = prefix
            for i in 0..<ip.count where bits > 0 {
                let take = min(8, bits)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
                if ip[i] & mask != address[i] & mask { return false }
                bits -= take
            }
            return true
        }
    }

    let networks: [Network]

    public init() { networks = [] }

    /// Parses a comma-separated list of addresses and CIDR blocks.
    /// - Throws: `TrackingConfigurationError` naming the entry that is not one.
    public init(parsing list: String) throws {
        var out: [Network] = []
        for raw in list.split(separator: ",") {
            let entry = raw.filter { $0 != " " }
            guard !entry.isEmpty else { continue }
            let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, let ip = IPAddress.parse(String(parts[0])) else {
                throw TrackingConfigurationError("trusted proxy '\(entry)' is not an IP address or CIDR block")
            }
            var prefix = ip.count * 8
            if parts.count == 2 {
                guard let p = Int(parts[1]), (0...(ip.count * 8)).contains(p) else {
                    throw TrackingConfigurationError("trusted proxy '\(entry)' has a bad prefix length")
                }
                prefix = p
            }
            out.append(Network(address: ip, prefix: prefix))
        }
        networks = out
    }

    public var isEmpty: Bool { networks.isEmpty }

    public func trusts(_ ip: String) -> Bool {
        guard !networks.isEmpty, let bytes = IPAddress.parse(ip) else { return false }
        return networks.contains { $0.contains(bytes) }
    }

    /// The client's address: the TCP peer unless it is a trusted proxy, in which case
    /// `X-Forwarded-For` is walked from the right past trusted proxies; the first untrusted
    /// address is the client (entries a client wrote itself, further left, are ignored).
    /// A malformed entry stops the walk at the last address we could trust.
    public func clientIP(peer: String, forwardedFor: [String]) -> String {
        let peerIP = IPAddress.host(ofPeer: peer)
        guard trusts(peerIP) else { return peerIP }
        var hops: [String] = []
        for header in forwardedFor {
            for part in header.split(separator: ",") { hops.append(String(part.filter { $0 != " " && $0 != "\t" })) }
        }
        var client = peerIP
        for hop in hops.reversed() {
            let ip = IPAddress.normalize(hop)
            guard IPAddress.parse(ip) != nil else { break }
            client = ip
            if !trusts(ip) { break }
        }
        return client
    }
}

/// A configuration value pixtrackd cannot use; the message names it (never a secret).
public struct TrackingConfigurationError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Textual IPv4/IPv6 parsing without libc (the domain imports no C module).
enum IPAddress {
    /// 4 or 16 bytes, nil when not an address. IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4.
    static func parse(_ s: String) -> [UInt8]? {
        if s.contains(":") { return parse6(s) }
        return parse4(Substring(s))
    }

    /// `ip:port`, `[ip6]:port` or a bare address → the address text.
    static func host(ofPeer peer: String) -> String {
        // Read as bytes: this runs for every click (twice), and a peer is ASCII.
        let u = peer.utf8
        if u.first == UInt8(ascii: "["), let close = u.firstIndex(of: UInt8(ascii: "]")) {
            return normalize(String(peer[u.index(after: u.startIndex)..<close]))
        }
        if let colon = u.firstIndex(of: UInt8(ascii: ":")), !u[u.index(after: colon)...].contains(UInt8(ascii: ":")) {
            return String(peer[..<colon])
        }
        return normalize(peer)
    }

    /// Strips brackets and maps `::ffff:a.b.c.d` to `a.b.c.d`.
    static func normalize(_ s: String) -> String {
        // Only text that starts with `[` or `:` can change (the usual IPv4 text returns as it is).
        guard let first = s.utf8.first, first == UInt8(ascii: "[") || first == UInt8(ascii: ":") else { return s }
        var t = s
        if t.hasPrefix("["), t.hasSuffix("]") { t = String(t.dropFirst().dropLast()) }
        if t.lowercased().hasPrefix("::ffff:"), parse4(t.dropFirst(7)) != nil { return String(t.dropFirst(7)) }
        return t
    }

    /// Four decimal octets, 0–255, without leading zeros ("01" is refused: some parsers read it
    /// as octal). One pass over the UTF-8 bytes, no allocation but the answer.
    private static func parse4(_ s: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(4)
        var value = 0, digits = 0
        for b in s.utf8 {
            if b == UInt8(ascii: ".") {
                guard digits > 0, out.count < 3 else { return nil }
                out.append(UInt8(value))
                value = 0
                digits = 0
            } else if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
                if digits > 0 && value == 0 { return nil }  // a leading zero
                digits += 1
                value = value * 10 + Int(b - UInt8(ascii: "0"))
                guard digits <= 3, value <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, out.count == 3 else { return nil }
        out.append(UInt8(value))
        return out
    }

    private static func parse6(_ s: String) -> [UInt8]? {
        guard s.utf8.count <= 45, !s.contains(":::") else { return nil }
        let halves = s.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt8]? {
            guard !part.isEmpty else { return [] }
            var out: [UInt8] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, g) in items.enumerated() {
                if i == items.count - 1, g.contains("."), let v4 = parse4(g) { out += v4; continue }
                guard (1...4).contains(g.count), let v = UInt16(g, radix: 16) else { return nil }
                out += [UInt8(v >> 8), UInt8(v & 0xFF)]
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        if halves.count == 1 {
            guard head.count == 16 else { return nil }
            return mapped(head)
        }
        guard let tail = groups(halves[1]), head.count + tail.count < 16 else { return nil }
        return mapped(head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail)
    }

    private static func mapped(_ b: [UInt8]) -> [UInt8] {
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return Array(b[12...]) }
        return b
    }
}

extension String {
    /// Splits on a multi-character separator (Foundation-free).
    func components(separatedBy separator: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: separator) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
}
