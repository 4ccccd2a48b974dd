import RPC

/// The tracking token: 32 lowercase hex digits (a UUIDv4 without dashes). Born only in
/// `PageViewRecorder` (RecordPageView and `/go/{slug}`); everything else only reads tokens.
public enum TrackingToken {
    /// What the original system stored before tokens existed: `tracking_…` session ids.
    public static let legacyPrefix = "tracking_"

    /// A new UUIDv4 as 32 lowercase hex digits.
    static func generate() -> String { generate(prefix: "") }

    /// `pageview_` + 32 hex: the event id shared by the browser and server PageView.
    static func newPageViewEventID() -> String { generate(prefix: "pageview_") }

    /// `prefix` + a fresh token, written straight into the string's storage: on every click,
    /// so no intermediate arrays.
    private static func generate(prefix: StaticString) -> String {
        var bytes: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            SecureRandom.fill(raw)
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // RFC 4122 variant
            let p = prefix.utf8Start
            let n = prefix.utf8CodeUnitCount
            return String(unsafeUninitializedCapacity: n + 32) { out in
                for i in 0..<n { out[i] = p[i] }
                for (i, b) in raw.enumerated() {
                    out[n + 2 * i] = hexDigits[Int(b >> 4)]
                    out[n + 2 * i + 1] = hexDigits[Int(b & 0xF)]
                }
                return n + 32
            }
        }
    }

    private static let hexDigits: InlineArray<16, UInt8> = [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102]

    /// True for exactly 32 lowercase hex digits.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        return u.count == 32 && u.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

}

/// What the bot's `/start` parameter says (DESIGN §1): a token, `{token}__px_{pixel_id}`, or
/// anything else (recorded, never bound).
public enum StartParameter: Equatable, Sendable {
    case token(String, pixelID: String?)
    case other(String)

    public init(_ raw: String) {
        let s = String(raw.unicodeScalars.filter { !$0.properties.isWhitespace })
        if TrackingToken.isValid(s) {
            self = .token(s, pixelID: nil)
            return
        }
        let marker = "__px_"
        if s.utf8.count > 32 + marker.utf8.count {
            let token = String(s.prefix(32))
            let rest = s.dropFirst(32)
            if TrackingToken.isValid(token), rest.hasPrefix(marker) {
                let pixel = String(rest.dropFirst(marker.count))
                if (1...32).contains(pixel.utf8.count), pixel.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    self = .token(token, pixelID: pixel)
                    return
                }
            }
        }
        self = .other(raw)
    }
}
