import PluginHost
import PluginKit
import Testing

@Suite struct SandboxTests {
    @Test func normalChargeIsCreatedWithAValidBRCodeAndCanBePaid() async throws {
        let sandbox = try await TestEnv.instance("sandbox")
        let ref = uniqueReference("sbx")
        let o = await sandbox.createPix(.sample(ref, cents: 2500))
        #expect(o.outcome == .created)
        #expect(BRCode.isValid(o.pixCode))
        #expect(BRCode.amountCents(o.pixCode) == 2500)
        #expect(o.expiresAtUnixMs > 0)
        #expect(await sandbox.getStatus(StatusQuery(transactionID: o.transactionID)).status == .pending)

        let hook = await sandbox.parseWebhook(WebhookRequest(body: JSON.object(["action": .string("pay"), "transaction_id": .string(o.transactionID)]).bytes))
        #expect(hook.status == .paid)
        #expect(hook.reference == ref)
        let s = await sandbox.getStatus(StatusQuery(transactionID: o.transactionID))
        #expect(s.status == .paid)
        #expect(s.amountCents == 2500)
        #expect(s.paidAtUnixMs > 0)
    }

    @Test(arguments: [(Int64(1091), CreateOutcome.declined), (1095, .notSent), (1093, .unknown), (1094, .unknown), (1096, .unknown), (1097, .unknown)])
    func amountsScriptTheOutcome(cents: Int64, expected: CreateOutcome) async throws {
        let sandbox = try await TestEnv.instance("sandbox")
        let ref = uniqueReference("amt")
        let o = await sandbox.createPix(.sample(ref, cents: cents))
        #expect(o.outcome == expected)
        // A charge whose answer was lost is still findable by its reference: no orphan PIX.
        let byRef = await sandbox.getStatus(StatusQuery(reference: ref))
        if expected == .unknown {
            #expect(byRef.status == .pending)
            #expect(!byRef.transactionID.isEmpty)
        } else {
            #expect(byRef.status == .notFound)
        }
    }

    @Test func timeoutModeOverrunsTheHostDeadline() async throws {
        // In-process: the sandbox keeps its charges in its memory, which the second instance (of
        // another registry) must share.
        let sandbox = try await TestEnv.instance("sandbox", timeoutMs: 300, inProcess: true)
        let ref = uniqueReference("late")
        let o = await sandbox.createPix(.sample(ref, cents: 1092))
        #expect(o.outcome == .unknown)
        #expect(o.failure?.kind == .timeout)
        // The charge exists anyway. Asked through an instance with the default timeout: the
        // 300 ms one is for the create, and a busy machine can take that long to answer.
        let patient = try await TestEnv.instance("sandbox", inProcess: true)
        #expect(await patient.getStatus(StatusQuery(reference: ref)).status == .pending)
    }

    @Test func behaviourOptionAndAutoPay() async throws {
        let declining = try await TestEnv.instance("sandbox", config: GatewayConfig(options: ["behavior": "decline"]))
        #expect(await declining.createPix(.sample(uniqueReference("d"))).outcome == .declined)
        let autoPay = try await TestEnv.instance("sandbox", config: GatewayConfig(options: ["auto_pay_ms": "1"]))
        let o = await autoPay.createPix(.sample(uniqueReference("auto")))
        try await Task.sleep(for: .milliseconds(5))
        #expect(await autoPay.getStatus(StatusQuery(transactionID: o.transactionID)).status == .paid)
        await #expect(throws: GatewayInstanceError.self) {
            _ = try await TestEnv.instance("sandbox", config: GatewayConfig(options: ["behavior": "explode"]))
        }
    }

    @Test func concurrentCallsIntoOneInstance() async throws {
        let sandbox = try await TestEnv.instance("sandbox")
        let outcomes = await withTaskGroup(of: CreatePixOutcome.self) { group in
            for i in 0..<64 {
                group.addTask { await sandbox.createPix(.sample(uniqueReference("c\(i)"), cents: 1000 + Int64(i % 50))) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.count == 64)
        #expect(outcomes.allSatisfy { $0.outcome == .created && BRCode.isValid($0.pixCode) })
        #expect(Set(outcomes.map(\.transactionID)).count == 64)
    }

    @Test func unsupportedQueriesAreRefusedWithoutCallingThePlugin() async throws {
        let atomopay = try await TestEnv.instance("atomopay", config: GatewayConfig(credentials: ["api_token": "t"], options: ["offer_hash": "o"]))
        let s = await atomopay.getStatus(StatusQuery(reference: "PAY-1"))
        #expect(s.status == .unknown)
        #expect(s.failure?.kind == .unsupported)
    }
}
