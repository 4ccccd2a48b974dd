@testable import PluginKit
import ProtoCodec
import Testing

/// What our Swift plugins return through the ABI (generated types): defaults omitted, NULs
/// (which protobuf-c strings cannot carry) dropped rather than failing the call.
@Suite struct PluginKitMessagesTests {
    @Test func resultsDropNULsAndOmitDefaults() throws {
        var pix = PixResult(.created, message: "ok\0")
        pix.transactionID = "tx\u{0}1"
        pix.expiresAtUnixMs = 42
        let m = try ProtoCodec.decode(try pix.wire.serializedBytes(), as: "pixtrack.v1.CreatePixResult")
        #expect(m.string("transaction_id") == "tx1" && m.string("message") == "ok")
        #expect(m.enumValue("outcome") == PixOutcome.created.rawValue && m.int64("expires_at_unix_ms") == 42)
        #expect(m["gateway_hash"] == nil && m["pix_code"] == nil)
        #expect(try PixResult(.unknown).wire.serializedBytes().isEmpty)

        var status = StatusResult(.paid, rawStatus: "PAID\0")
        status.amountCents = 1990
        let s = try ProtoCodec.decode(try status.wire.serializedBytes(), as: "pixtrack.v1.StatusResult")
        #expect(s.enumValue("status") == PixStatus.paid.rawValue && s.int64("amount_cents") == 1990 && s.string("raw_status") == "PAID")
        #expect(try StatusResult(.unknown).wire.serializedBytes().isEmpty)

        var hook = WebhookResult()
        hook.reference = "PAY-3"
        hook.status = .chargeback
        let w = try ProtoCodec.decode(try hook.wire.serializedBytes(), as: "pixtrack.v1.WebhookResult")
        #expect(w.string("reference") == "PAY-3" && w.enumValue("status") == PixStatus.chargeback.rawValue && w["event_id"] == nil)
    }

    @Test func requestsDecodeIntoThePluginsValues() throws {
        let bytes = try ProtoCodec.encode(ProtoMessage("pixtrack.v1.CreatePixRequest", [
            "reference": .string("PAY-9"), "amount_cents": .int64(500), "postback_url": .string("https://h/p"),
            "customer": .message(ProtoMessage("pixtrack.v1.Customer", ["email": .string("a@b.br")])),
        ]))
        let request = PixRequest(try .init(serializedBytes: bytes))
        #expect(request.reference == "PAY-9" && request.amountCents == 500 && request.postbackURL == "https://h/p")
        #expect(request.customer.email == "a@b.br" && request.customer.name.isEmpty)
    }
}
