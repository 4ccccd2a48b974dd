import CSystemShims
import Glibc
import PluginConformance
@testable import PluginHost
import Testing

/// What pixtrack_gateway.h promises a plugin author, checked against the host (in-process and
/// in a runner, which must not differ).
@Suite struct HeaderContractTests {
    static func probe(inProcess: Bool, baseURL: String) async throws -> (GatewayRegistry, GatewayInstance) {
        let dir = TestEnv.tempDir()
        let path = try await TestEnv.compileFixture(mode: Fixture.probe.rawValue, dir: dir, name: "libprobe.so")
        let registry = try await TestEnv.registry(path: path, inProcess: inProcess)
        return (registry, try await registry.makeInstance(gateway: "fixture", config: GatewayConfig(baseURL: baseURL)))
    }

    /// WEBHOOKS: parse_webhook's http_request answers PT_OK with sent=false and
    /// HTTP_ERROR_INVALID_REQUEST (1), and nothing reaches the network; header names arrive
    /// lower-case; an id longer than 256 bytes is refused, not cut.
    @Test(arguments: [false, true])
    func parseWebhookCannotSendAndSeesLowerCaseHeaders(inProcess: Bool) async throws {
        let server = try ReplayServer()
        defer { server.stop() }
        server.script([.answer(status: 200, headers: [:], body: [])])
        let (registry, gw) = try await Self.probe(inProcess: inProcess, baseURL: "http://127.0.0.1:\(server.port)/hook")
        defer { registry.stopRunners() }
        let o = await gw.parseWebhook(WebhookRequest(headers: [GatewayHeader("X-Signature", "abc")], body: Array("{}".utf8)))
        #expect(o.failure == nil, "\(String(describing: o.failure))")
        #expect(o.rawStatus == "status=0 sent=0 error=1")
        #expect(o.eventID == "x-signature")
        #expect(server.received.isEmpty)

        let long = await gw.parseWebhook(WebhookRequest(body: Array("long".utf8)))
        #expect(long.failure?.kind == .invalidResult)
        #expect(long.transactionID.isEmpty)
        #expect(long.failure?.message.contains("256-byte") == true, "\(String(describing: long.failure))")
    }

    /// OUTCOMES: PT_OK with an empty (0-byte) StatusResult is a valid answer, status UNKNOWN,
    /// not a failure (the runner passes "0 bytes" on, not "no result").
    @Test(arguments: [false, true])
    func anEmptyResultIsAnEmptyMessage(inProcess: Bool) async throws {
        let (registry, gw) = try await Self.probe(inProcess: inProcess, baseURL: "")
        defer { registry.stopRunners() }
        let s = await gw.getStatus(StatusQuery(transactionID: "t1"))
        #expect(s.failure == nil, "\(String(describing: s.failure))")
        #expect(s.status == .unknown)
    }

    /// THREADING: plugin threads get an 8 MiB stack whatever RLIMIT_STACK says.
    @Test func pluginThreadsHaveTheDocumentedStack() async throws {
        let box = BlockingBox<Int>()
        #expect(PluginThread.start { box.put(pt_current_thread_stack_size()) })
        let size = try #require(box.wait(timeoutMs: 5_000))
        #expect(size >= PluginThread.stackBytes && PluginThread.stackBytes == 8 << 20, "stack \(size)")
    }

    /// TIME: remaining_ms(NULL) is INT64_MAX; PIXTRACK_PLUGIN_TIMEOUT_MS is create()'s deadline too.
    @Test func remainingMsOfNullAndCreateDeadline() throws {
        #expect(HostAPI.table.pointee.remaining_ms(nil) == Int64.max)
        let o = try #require(try GatewayRegistry.Options.fromEnvironment(["PIXTRACK_PLUGIN_DIR": "/x", "PIXTRACK_PLUGIN_TIMEOUT_MS": "1234"]))
        #expect(o.callTimeoutMs == 1234 && o.createTimeoutMs == 1234)
    }
}
