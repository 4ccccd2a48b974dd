import JSONKit

/// PIX "copia e cola" codes (BR Code, EMV Merchant-Presented QR): TLV fields `ID(2) LEN(2) VALUE`
/// ending in `6304` + CRC-16/CCITT-FALSE over everything before the CRC value.
public enum BRCode {
    /// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).
    /// `crc16("123456789") == 0x29B1`.
    public static func crc16<S: Sequence>(_ bytes: S) -> UInt16 where S.Element == UInt8 {
        var crc: UInt16 = 0xFFFF
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    /// The 4 uppercase hex digits of `crc16(text)`.
    public static func crcHex(_ text: String) -> String {
        let v = crc16(text.utf8)
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: [12, 8, 4, 0].map { digits[Int((v >> UInt16($0)) & 0xF)] }, as: UTF8.self)
    }

    /// One top-level field.
    public struct Field: Sendable, Hashable {
        public let id: String
        public let value: String
    }

    public enum Problem: Error, Sendable, Hashable, CustomStringConvertible {
        case empty
        case malformed(String)
        case badCRC(expected: String, found: String)

        public var description: String {
            switch self {
            case .empty: "empty pix code"
            case .malformed(let why): "malformed pix code: \(why)"
            case .badCRC(let e, let f): "pix code CRC mismatch: computed \(e), code says \(f)"
            }
        }
    }

    /// Splits `text` into TLV fields. Lengths count characters (the values are ASCII in practice).
    public static func fields(_ text: String) throws(Problem) -> [Field] {
        let chars = Array(text)
        var out: [Field] = []
        var i = 0
        while i < chars.count {
            guard i + 4 <= chars.count else { throw .malformed("truncated field header at \(i)") }
            let id = String(chars[i..<(i + 2)])
            guard id.allSatisfy(\.isASCIIDigit) else { throw .malformed("non-numeric field id '\(id)'") }
            let lenText = String(chars[(i + 2)..<(i + 4)])
            guard lenText.allSatisfy(\.isASCIIDigit), let len = Int(lenText) else { throw .malformed("bad length in field \(id)") }
            guard i + 4 + len <= chars.count else { throw .malformed("field \(id) runs past the end") }
            out.append(Field(id: id, value: String(chars[(i + 4)..<(i + 4 + len)])))
            i += 4 + len
        }
        return out
    }

    /// Checks structure and CRC; returns the top-level fields.
    ///
    /// Valid means: well-formed TLV, `00` = `01` first, `6304` + CRC last, and the CRC matches.
    @discardableResult
    public static func validate(_ code: String) throws(Problem) -> [Field] {
        guard !code.isEmpty else { throw .empty }
        guard code.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F }) else {
            throw .malformed("non-printable or non-ASCII characters")
        }
        let fs = try fields(code)
        guard let first = fs.first, first.id == "00", first.value == "01" else { throw .malformed("does not start with 000201") }
        guard let last = fs.last, last.id == "63", last.value.count == 4 else { throw .malformed("does not end with a 6304 CRC field") }
        let body = String(code.dropLast(4))
        let expected = crcHex(body)
        guard expected == last.value.uppercased() else { throw .badCRC(expected: expected, found: last.value) }
        return fs
    }

    /// True when `validate` passes.
    public static func isValid(_ code: String) -> Bool { (try? validate(code)) != nil }

    /// The transaction amount (field 54) in centavos, `nil` when absent or unparsable.
    public static func amountCents(_ code: String) -> Int64? {
        guard let fs = try? fields(code), let v = fs.first(where: { $0.id == "54" })?.value else { return nil }
        return Decimal2.cents(v)
    }

    /// Builds a static-style BR Code with a correct CRC.
    ///
    /// - Parameters:
    ///   - key: the PIX key or, with `url` set, ignored in favour of a dynamic-payload URL.
    ///   - amountCents: written as field 54 with two decimals when > 0.
    ///   - name/city: truncated to 25/15 characters and reduced to ASCII, as the spec requires.
    ///   - txid: field 62/05, up to 25 alphanumerics (`***` when empty).
    public static func build(key: String = "", url: String = "", amountCents: Int64, name: String, city: String, txid: String) -> String {
        func tlv(_ id: String, _ value: String) -> String {
            let n = value.count
            return id + (n < 10 ? "0\(n)" : "\(n)") + value
        }
        var account = tlv("00", "br.gov.bcb.pix")
        account += url.isEmpty ? tlv("01", String(key.prefix(77))) : tlv("25", String(url.prefix(77)))
        var s = tlv("00", "01")
        if !url.isEmpty { s += tlv("01", "12") }
        s += tlv("26", account)
        s += tlv("52", "0000") + tlv("53", "986")
        if amountCents > 0 { s += tlv("54", Decimal2.text(amountCents)) }
        s += tlv("58", "BR")
        s += tlv("59", String(ascii(name).prefix(25)).isEmpty ? "NA" : String(ascii(name).prefix(25)))
        s += tlv("60", String(ascii(city).prefix(15)).isEmpty ? "NA" : String(ascii(city).prefix(15)))
        let cleanTxid = String(txid.filter { $0.isASCII && ($0.isLetter || $0.isNumber) }.prefix(25))
        s += tlv("62", tlv("05", cleanTxid.isEmpty ? "***" : cleanTxid))
        s += "6304"
        return s + crcHex(s)
    }

    private static func ascii(_ s: String) -> String {
        let map: [Character: Character] = ["á": "a", "à": "a", "â": "a", "ã": "a", "é": "e", "ê": "e", "í": "i",
                                           "ó": "o", "ô": "o", "õ": "o", "ú": "u", "ü": "u", "ç": "c",
                                           "Á": "A", "À": "A", "Â": "A", "Ã": "A", "É": "E", "Ê": "E", "Í": "I",
                                           "Ó": "O", "Ô": "O", "Õ": "O", "Ú": "U", "Ü": "U", "Ç": "C"]
        return String(s.compactMap { c -> Character? in
            if let m = map[c] { return m }
            guard c.isASCII, let v = c.asciiValue, v >= 0x20, v < 0x7F else { return nil }
            return c
        })
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
