import Foundation
import HTTPClient
import PluginKit
import Testing

@Suite struct BRCodeTests {
    static let manual = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"

    @Test func crcMatchesTheCheckValue() {
        #expect(BRCode.crc16(Array("123456789".utf8)) == 0x29B1)
        #expect(BRCode.crcHex("123456789") == "29B1")
    }

    @Test func acceptsTheCentralBankExampleAndRejectsTampering() throws {
        try BRCode.validate(Self.manual)
        #expect(!BRCode.isValid(String(Self.manual.dropLast()) + "E"))
        #expect(!BRCode.isValid(Self.manual.replacingOccurrences(of: "Fulano", with: "Fulana")))
        #expect(!BRCode.isValid(""))
        #expect(!BRCode.isValid("<html>oops</html>"))
        #expect(!BRCode.isValid("0002012658"))
    }

    @Test func builtCodesAreValidAndCarryTheAmount() throws {
        let code = BRCode.build(key: "chave@example.com", amountCents: 1990, name: "Loja São João", city: "São Paulo", txid: "PAY-42")
        try BRCode.validate(code)
        #expect(BRCode.amountCents(code) == 1990)
        #expect(code.contains("5802BR"))
        #expect(code.contains("PAY42"))
    }
}

@Suite struct GatewaySupportTests {
    @Test func parsesGatewayTimestamps() {
        #expect(GatewaySupport.parseTimestamp("2025-01-31T12:00:00Z") == 1_738_324_800_000)
        #expect(GatewaySupport.parseTimestamp("2025-01-31T09:00:00-03:00") == 1_738_324_800_000)
        #expect(GatewaySupport.parseTimestamp("2025-01-31 09:00:00") == 1_738_324_800_000)
        #expect(GatewaySupport.parseTimestamp("2025-01-31T12:00:00.250Z") == 1_738_324_800_250)
        #expect(GatewaySupport.parseTimestamp("1738324800") == 1_738_324_800_000)
        #expect(GatewaySupport.parseTimestamp("yesterday") == nil)
    }
}

@Suite struct RedactionTests {
    @Test func hidesSecretsQueryValuesAndHeaders() {
        let r = Redactor(secrets: ["s3cr3t-value", "ab"])
        #expect(r.redact("https://x/v1?api_token=abc123&page=2") == "https://x/v1?api_token=***&page=2")
        #expect(r.redact("oops s3cr3t-value leaked") == "oops *** leaked")
        #expect(r.redact("ab stays: too short to be treated as a secret") == "ab stays: too short to be treated as a secret")
        #expect(r.redact("access_token=xyz client_secret=q") == "access_token=*** client_secret=***")
        #expect(r.redactHeader(name: "Authorization", value: "Bearer abc") == "***")
        #expect(r.redactHeader(name: "X-API-Key", value: "k") == "***")
        #expect(r.redactHeader(name: "Accept", value: "application/json") == "application/json")
    }
}
