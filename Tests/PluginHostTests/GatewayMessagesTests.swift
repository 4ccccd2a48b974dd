import HTTPClient
import PixTrackMessages
@testable import PluginHost
import ProtoCodec
import Testing

/// The messages the host encodes for plugins (generated types) keep the wire form plugins have
/// always received: checked byte for byte against the descriptor-driven codec.
@Suite struct GatewayMessagesTests {
    @Test func aCreateRequestAlwaysCarriesACustomerAndOmitsDefaults() throws {
        let request = CreatePixRequest(reference: "PAY-7", amountCents: 1990)
        let bytes = try GatewayProto.createRequest(request).serializedBytes()
        #expect(bytes == (try ProtoCodec.encode(ProtoMessage("pixtrack.v1.CreatePixRequest", [
            "reference": .string("PAY-7"), "amount_cents": .int64(1990),
            "customer": .message(ProtoMessage("pixtrack.v1.Customer")),
        ]))))
        let decoded = try ProtoCodec.decode(bytes, as: "pixtrack.v1.CreatePixRequest")
        #expect(decoded.message("customer") != nil && decoded["description"] == nil && decoded["postback_url"] == nil)

        let full = CreatePixRequest(reference: "PAY-8", amountCents: 5, description: "curso",
                                    customer: GatewayCustomer(name: "Ana", email: "a@x.br", phone: "", document: "123"),
                                    postbackURL: "https://h/webhooks/sandbox/s")
        let m = try ProtoCodec.decode(try GatewayProto.createRequest(full).serializedBytes(), as: "pixtrack.v1.CreatePixRequest")
        #expect(m.string("description") == "curso" && m.string("postback_url") == "https://h/webhooks/sandbox/s")
        #expect(m.message("customer")?.string("name") == "Ana" && m.message("customer")?.string("document") == "123")
        #expect(m.message("customer")?["phone"] == nil)
    }

    @Test func configMapsAreWrittenInKeyOrder() throws {
        let config = GatewayConfig(credentials: ["secret_key": "sk", "api_key": "ak"], baseURL: "http://127.0.0.1:1",
                                   options: ["b": "2", "a": ""])
        #expect(try GatewayProto.config(config).serializedBytes() == ProtoCodec.encode(ProtoMessage("pixtrack.v1.PluginConfig", [
            "credentials": .stringMap(config.credentials, entryType: "pixtrack.v1.PluginConfig.CredentialsEntry"),
            "base_url": .string(config.baseURL),
            "options": .stringMap(config.options, entryType: "pixtrack.v1.PluginConfig.OptionsEntry"),
        ])))
        #expect(try GatewayProto.config(GatewayConfig()).serializedBytes().isEmpty)
    }

    @Test func webhookHeaderNamesReachPluginsLowerCased() throws {
        let hook = WebhookRequest(headers: [GatewayHeader("X-Signature", "AbC"), GatewayHeader("content-type", "application/json")],
                                  body: Array("{}".utf8))
        let m = try ProtoCodec.decode(try GatewayProto.webhookRequest(hook).serializedBytes(), as: "pixtrack.v1.ParseWebhookRequest")
        let headers = m.list("headers").compactMap { v -> String? in
            guard case .message(let h) = v else { return nil }
            return h.string("name") + "=" + h.string("value")
        }
        #expect(headers == ["x-signature=AbC", "content-type=application/json"])
        #expect(m.bytes("body") == Array("{}".utf8))
    }

    @Test func statusRequestsAndHTTPAnswersKeepTheirWireForm() throws {
        #expect(try GatewayProto.statusRequest(StatusQuery(reference: "PAY-1")).serializedBytes()
            == ProtoCodec.encode(ProtoMessage("pixtrack.v1.GetStatusRequest", ["reference": .string("PAY-1")])))

        var result = HTTPClientResult(sent: true, status: 201, headers: [HTTPClientHeader("x-a", "1"), HTTPClientHeader("x-b", "nul\0")],
                                      body: [1, 2], elapsedMs: 12)
        result.error = .timeout
        result.errorMessage = "timed out talking to token-123\0"
        let answer = HostAPI.httpResponse(result, Redactor(secrets: ["token-123"]))
        let m = try ProtoCodec.decode(try answer.serializedBytes(), as: "pixtrack.v1.HttpResponse")
        #expect(m.bool("sent") && m.int32("status") == 201 && m.bytes("body") == [1, 2] && m.int64("elapsed_ms") == 12)
        // A header holding a NUL is dropped; the error message is redacted and loses its NUL.
        #expect(m.list("headers").count == 1)
        #expect(m.enumValue("error") == HostAPI.errorNumber(.timeout))
        #expect(!m.string("error_message").contains("token-123") && !m.string("error_message").contains("\0"))
        #expect(try HostAPI.httpResponse(HTTPClientResult(sent: false), Redactor(secrets: [])).serializedBytes().isEmpty)
    }

    @Test func overlongIDsAreNamedByTheirProtoField() {
        let long = String(repeating: "x", count: GatewayProto.maxID + 1)
        #expect(GatewayProto.overlongID(("transaction_id", "t"), ("gateway_hash", long))
            == "gateway_hash of 257 bytes exceeds the 256-byte limit for ids")
        #expect(GatewayProto.overlongID(("transaction_id", String(repeating: "y", count: GatewayProto.maxID))) == nil)
        #expect(GatewayProto.text("abcdefghij", limit: 5) == "abcde" && GatewayProto.text("abc", limit: 5) == "abc")
    }
}
