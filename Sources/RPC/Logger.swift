import Glibc

/// Structured logging: one `key=value` line per event on stderr.
///
/// Each line is written with a single `write(2)`, so lines from concurrent threads never
/// interleave. Values with spaces, quotes or `=` are quoted. Never pass secrets as fields.
public struct Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var name: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    public let minimum: Level
    private let base: [(String, String)]

    public init(minimum: Level = .info, base: [(String, String)] = []) {
        self.minimum = minimum
        self.base = base
    }

    /// A logger whose lines all carry `fields` (e.g. a request id).
    public func with(_ fields: (String, String)...) -> Logger {
        Logger(minimum: minimum, base: base + fields)
    }

    public func debug(_ event: String, _ fields: (String, String)...) { log(.debug, event, fields) }
    public func info(_ event: String, _ fields: (String, String)...) { log(.info, event, fields) }
    public func warning(_ event: String, _ fields: (String, String)...) { log(.warning, event, fields) }
    public func error(_ event: String, _ fields: (String, String)...) { log(.error, event, fields) }

    public func log(_ level: Level, _ event: String, _ fields: [(String, String)]) {
        guard level >= minimum else { return }
        var line = "ts=\(Self.timestamp()) level=\(level.name) event=\(Self.quote(event))"
        for (k, v) in base + fields {
            line += " \(k)=\(Self.quote(v))"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(2, buf.baseAddress! + off, buf.count - off)
                if n <= 0 { if errno == EINTR { continue }; return }
                off += n
            }
        }
    }

    static func quote(_ v: String) -> String {
        if !v.isEmpty, v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "=") }) {
            return v
        }
        var out = "\""
        for s in v.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if s.value < 0x20 || s.value == 0x7F { out += "\\u{\(String(s.value, radix: 16))}" } else { out.unicodeScalars.append(s) }
            }
        }
        return out + "\""
    }

    /// RFC 3339 UTC with milliseconds.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func p(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(p(tmv.tm_year + 1900, 4))-\(p(tmv.tm_mon + 1, 2))-\(p(tmv.tm_mday, 2))T\(p(tmv.tm_hour, 2)):\(p(tmv.tm_min, 2)):\(p(tmv.tm_sec, 2)).\(p(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}
