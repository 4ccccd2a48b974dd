/// Hides secrets in text meant for logs: known secret values, sensitive query parameters and
/// sensitive headers.
public struct Redactor: Sendable {
    /// Replaces every hidden value.
    public static let mask = "***"

    /// Query parameters whose values are always hidden (compared case-insensitively).
    public static let sensitiveQueryKeys: Set<String> = [
        "api_token", "apitoken", "api_key", "apikey", "access_token", "token", "key", "secret",
        "client_secret", "password", "pass", "signature", "sig", "auth", "authorization",
    ]

    /// Headers whose values are always hidden (lowercase).
    public static let sensitiveHeaders: Set<String> = [
        "authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "cookie",
        "set-cookie", "x-access-token", "x-client-secret",
    ]

    /// Secret values this redactor hides wherever they appear, longest first (so a secret that
    /// contains another is hidden whole). Values shorter than 3 characters are ignored: hiding
    /// every "1" would make logs useless without protecting anything.
    public let secrets: [String]

    public init(secrets: [String] = []) {
        self.secrets = Array(Set(secrets.filter { $0.count >= 3 })).sorted { $0.count > $1.count }
    }

    /// A redactor hiding these secrets too.
    public func adding(_ more: [String]) -> Redactor { Redactor(secrets: secrets + more) }

    /// `text` with known secrets and sensitive query values replaced by `mask`.
    public func redact(_ text: String) -> String {
        var out = text
        for s in secrets where out.contains(s) {
            out = out.replacingAll(s, with: Self.mask)
        }
        return Self.redactQueryValues(in: out)
    }

    /// A header value as it may be logged.
    public func redactHeader(name: String, value: String) -> String {
        Self.sensitiveHeaders.contains(name.lowercased()) ? Self.mask : redact(value)
    }

    /// `key=value` pairs whose key is sensitive, anywhere in `text` (URLs, bodies, messages), get
    /// their value replaced by `mask` up to the next `&`, whitespace, quote or `#`.
    public static func redactQueryValues(in text: String) -> String {
        let chars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var key = String.UnicodeScalarView()  // the run of key characters just before `i`
        var i = 0
        while i < chars.count {
            let c = chars[i]
            out.append(c)
            i += 1
            if c == "=", sensitiveQueryKeys.contains(String(key).lowercased()) {
                var j = i
                while j < chars.count, !valueEnd.contains(chars[j]) { j += 1 }
                if j > i { out.append(contentsOf: mask.unicodeScalars) }
                i = j
                key = String.UnicodeScalarView()
            } else if c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "-" {
                key.append(c)
            } else {
                key = String.UnicodeScalarView()
            }
        }
        return String(out)
    }

    private static let valueEnd = Set(" \t\r\n&#\"'<>,;".unicodeScalars)
}

extension String {
    /// Every occurrence of `target` replaced (Foundation-free).
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        let t = Array(target.utf8)
        let src = Array(utf8)
        var out: [UInt8] = []
        out.reserveCapacity(src.count)
        var i = 0
        while i < src.count {
            if src[i] == t[0], i + t.count <= src.count, Array(src[i..<(i + t.count)]) == t {
                out += replacement.utf8
                i += t.count
            } else {
                out.append(src[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
