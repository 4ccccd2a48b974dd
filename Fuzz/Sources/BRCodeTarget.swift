import BRCode
import JSONKit

/// `brcode`: PIX "copia e cola" parsing (`BRCode.fields`, `validate`, `amountCents`) and
/// building (`BRCode.build`).
///
/// Input: a control byte, then text. Control bit 0 clear: the text is a code. Invariants: the
/// fields rebuild the exact text (one byte a character); a valid code has the structure and the CRC it claims; a code
/// failing only its CRC is valid with the CRC `validate` computed; `amountCents` reads field 54.
/// Control bit 0 set: the text is `key`, `name`, `city`, `txid`, `amount` on lines (a `url`
/// instead of a key with bit 1). Invariants: the built code is valid (for a printable ASCII
/// key or URL), within the field limits, and carries the amount.
let brCodeTarget = FuzzTarget(name: "brcode", summary: "BRCode parse/validate/amount and build; CRC and TLV invariants",
                              maxLength: 1024) {
    { bytes in
        var input = FuzzInput(bytes)
        let control = input.byte()
        let text = String(decoding: input.rest, as: UTF8.self)
        if control & 1 == 0 { checkParse(text) } else { checkBuild(text, url: control & 2 != 0) }
    }
}

private func checkParse(_ text: String) {
    if let fields = try? BRCode.fields(text) {
        // Lengths count characters: the rebuild is exact when each character is one byte (codes
        // are ASCII; `validate` refuses anything else).
        if text.utf8.count == text.count {
            let rebuilt = fields.map { f in f.id + (f.value.count < 10 ? "0" : "") + "\(f.value.count)" + f.value }.joined()
            require(rebuilt.unicodeScalars.elementsEqual(text.unicodeScalars), "fields do not rebuild the text")
        }
        let amount = fields.first { $0.id == "54" }.flatMap { Decimal2.cents($0.value) }
        require(BRCode.amountCents(text) == amount, "amountCents \(String(describing: BRCode.amountCents(text))), field 54 says \(String(describing: amount))")
    }
    do {
        let fields = try BRCode.validate(text)
        require(BRCode.isValid(text), "validate passed, isValid is false")
        require(fields.first?.id == "00" && fields.first?.value == "01", "a valid code that does not start with 000201")
        require(fields.last?.id == "63" && text.hasSuffix(fields.last!.value), "a valid code that does not end with its CRC field")
        require(BRCode.crcHex(String(text.dropLast(4))) == fields.last!.value.uppercased(), "a valid code whose CRC does not match")
    } catch {
        require(!BRCode.isValid(text), "validate failed (\(error)), isValid is true")
        if case .badCRC(let expected, _) = error {
            let fixed = String(text.dropLast(4)) + expected
            require(BRCode.isValid(fixed), "\(error), yet the code with CRC \(expected) is not valid either")
        }
    }
}

private func checkBuild(_ text: String, url: Bool) {
    let parts = text.split(separator: "\n", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
    func part(_ i: Int) -> String { i < parts.count ? parts[i] : "" }
    let amount = Int64(part(4)) ?? 0
    let target = part(0)
    let code = url ? BRCode.build(url: target, amountCents: amount, name: part(1), city: part(2), txid: part(3))
                   : BRCode.build(key: target, amountCents: amount, name: part(1), city: part(2), txid: part(3))
    // Name and city are reduced to ASCII by `build`; a key or URL is the caller's to check.
    guard target.unicodeScalars.allSatisfy({ (0x20..<0x7F).contains($0.value) }) else { return }
    let fields: [BRCode.Field]
    do { fields = try BRCode.validate(code) } catch {
        require(false, "build made an invalid code (\(error)): \(code)")
        return
    }
    let byID = Dictionary(fields.map { ($0.id, $0.value) }, uniquingKeysWith: { a, _ in a })
    require((byID["59"]?.count ?? 0) <= 25 && (byID["60"]?.count ?? 0) <= 15, "name or city over its limit: \(code)")
    // Realistic amounts (up to R$ 100 billion) are read back exactly; none is written for <= 0.
    if amount > 0 && amount <= 10_000_000_000_000 {
        require(BRCode.amountCents(code) == amount, "built for \(amount) cents, reads \(String(describing: BRCode.amountCents(code))): \(code)")
    } else if amount <= 0 {
        require(BRCode.amountCents(code) == nil, "built without an amount, reads \(String(describing: BRCode.amountCents(code)))")
    }
}
