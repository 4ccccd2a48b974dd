import HTTPClient
import PluginKit
import Testing

@Suite struct HTTPClientTests {
    let client = HTTPClient()

    func exec(_ r: HTTPClientRequest) async throws -> HTTPClientResult {
        let c = client
        return try await offPool { c.execute(r) }
    }

    @Test func answersCarryStatusHeadersAndBody() async throws {
        let fake = try await FakeGateways.start()
        let r = try await exec(HTTPClientRequest(method: "POST", url: "\(fake.baseURL("paradise"))/transaction.php",
                                                 headers: [HTTPClientHeader("X-API-Key", "paradise-key")],
                                                 body: Array(#"{"amount": 1990, "reference": "PAY-H1"}"#.utf8)))
        #expect(r.error == nil)
        #expect(r.sent)
        #expect(r.status == 200)
        #expect(r.header("content-type") == "application/json")
        #expect((try JSON.parse(r.body))["transaction_id"]?.text?.isEmpty == false)
    }

    @Test func refusedConnectionIsNotSent() async throws {
        let r = try await exec(HTTPClientRequest(url: "http://127.0.0.1:1/x"))
        #expect(!r.sent)
        #expect(r.error == .connect)
    }

    @Test func unresolvableHostIsNotSent() async throws {
        let r = try await exec(HTTPClientRequest(url: "http://no-such-host.invalid/x", connectTimeoutMs: 2_000, timeoutMs: 2_000))
        #expect(!r.sent)
        #expect(r.error == .dns || r.error == .timeout)
    }

    @Test func invalidRequestsAreNotSent() async throws {
        #expect(try await exec(HTTPClientRequest(url: "ftp://127.0.0.1/x")).error == .invalidRequest)
        #expect(try await exec(HTTPClientRequest(method: "BREW", url: "http://127.0.0.1/x")).error == .invalidRequest)
        #expect(try await exec(HTTPClientRequest(url: "http://127.0.0.1/x", headers: [HTTPClientHeader("X-A", "b\r\nX-Injected: 1")])).error == .invalidRequest)
        #expect(try await !exec(HTTPClientRequest(url: "http://127.0.0.1/a b")).sent)
    }

    @Test func resetAfterTheRequestIsSent() async throws {
        let fake = try await FakeGateways.start()
        try await fake.fault("paradise", kind: "reset")
        let r = try await exec(HTTPClientRequest(method: "POST", url: "\(fake.baseURL("paradise"))/transaction.php",
                                                 headers: [HTTPClientHeader("X-API-Key", "paradise-key")],
                                                 body: Array(#"{"amount": 1990, "reference": "PAY-H2"}"#.utf8)))
        #expect(r.sent)
        #expect(r.error == .receive)
        #expect(try await fake.ledger("paradise").count == 1)
    }

    @Test func timeoutAfterSendingIsSent() async throws {
        let fake = try await FakeGateways.start()
        try await fake.fault("paradise", kind: "timeout")
        let r = try await exec(HTTPClientRequest(method: "POST", url: "\(fake.baseURL("paradise"))/transaction.php",
                                                 headers: [HTTPClientHeader("X-API-Key", "paradise-key")],
                                                 body: Array(#"{"amount": 1990, "reference": "PAY-H3"}"#.utf8), timeoutMs: 300))
        #expect(r.sent)
        #expect(r.error == .timeout)
        #expect(r.elapsedMs < 5_000, "the 300 ms timeout, not the fake's endless stall")
    }

    @Test func oversizedAnswersFail() async throws {
        let fake = try await FakeGateways.start()
        let r = try await exec(HTTPClientRequest(method: "POST", url: "\(fake.baseURL("paradise"))/transaction.php",
                                                 headers: [HTTPClientHeader("X-API-Key", "paradise-key")],
                                                 body: Array(#"{"amount": 1990, "reference": "PAY-H4"}"#.utf8), maxResponseBytes: 16))
        #expect(r.sent)
        #expect(r.error == .tooLarge)
        #expect(r.body.isEmpty)
    }
}
