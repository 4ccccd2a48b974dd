import PluginHost
import PluginKit
import Testing

/// SyncPay's Bearer token: cached per credentials, refreshed before it expires, one fetch at a
/// time under load, refreshed and retried when the gateway says it expired.
@Suite struct SyncPayTokenTests {
    /// Fresh credentials per test, so the process-wide token cache starts empty for it.
    static func credentials(_ fake: FakeGateways, _ tag: String) async throws -> [String: String] {
        let c = ["client_id": "id-\(tag)-\(uniqueReference("x"))", "client_secret": "secret-\(tag)"]
        try await fake.control("config", .object(["credentials": .object(["syncpay": .object(c.mapValues { .string($0) })])]))
        return c
    }

    static func authCount(_ fake: FakeGateways) async throws -> Int {
        try await fake.requests("syncpay").filter { $0["path"]?.string?.hasSuffix("/auth-token") == true }.count
    }

    static func burst(_ gw: GatewayInstance, _ n: Int, _ tag: String) async -> [CreatePixOutcome] {
        await withTaskGroup(of: CreatePixOutcome.self) { group in
            for i in 0..<n { group.addTask { await gw.createPix(.sample(uniqueReference("\(tag)\(i)"), cents: 500 + Int64(i))) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test func oneTokenFetchUnderConcurrentLoadAndAfterExpiry() async throws {
        let fake = try await FakeGateways.start()
        let creds = try await Self.credentials(fake, "load")
        let gw = try await TestEnv.instance("syncpay", config: fake.config("syncpay", credentials: creds))
        let first = await Self.burst(gw, 32, "a")
        #expect(first.allSatisfy { $0.outcome == .created })
        #expect(try await Self.authCount(fake) == 1)

        // The gateway expires every token: the next burst gets 401s, refreshes once, retries.
        try await fake.control("expire_tokens", .object([:]))
        let second = await Self.burst(gw, 32, "b")
        #expect(second.allSatisfy { $0.outcome == .created }, "\(second.map(\.message))")
        #expect(try await Self.authCount(fake) <= 3)
        #expect(try await fake.ledger("syncpay").count == 64)
    }

    @Test func refreshesBeforeTheTokenExpires() async throws {
        let fake = try await FakeGateways.start()
        let creds = try await Self.credentials(fake, "early")
        // Tokens live an hour at the gateway; with a margin of 3598 s the plugin treats them as
        // due for refresh after 2 s, long before the gateway would refuse them.
        let gw = try await TestEnv.instance("syncpay", config: fake.config("syncpay", credentials: creds,
                                                                          options: ["token_margin_seconds": "3598"]))
        async let e1 = gw.createPix(.sample(uniqueReference("e1")))
        async let e2 = gw.createPix(.sample(uniqueReference("e2")))
        let (o1, o2) = await (e1, e2)
        #expect(o1.outcome == .created && o2.outcome == .created)
        #expect(try await Self.authCount(fake) == 1)
        try await Task.sleep(for: .milliseconds(2_200))
        #expect(await gw.createPix(.sample(uniqueReference("e3"))).outcome == .created)
        #expect(try await Self.authCount(fake) == 2)
        // Every cash-in went through on the first try: the refresh came before any refusal.
        let cashIns = try await fake.requests("syncpay").filter { $0["path"]?.string?.hasSuffix("/cash-in") == true }
        #expect(cashIns.count == 3)
    }

    @Test func expiredTokenFaultIsRefreshedAndRetried() async throws {
        let fake = try await FakeGateways.start()
        let creds = try await Self.credentials(fake, "fault")
        let gw = try await TestEnv.instance("syncpay", config: fake.config("syncpay", credentials: creds))
        #expect(await gw.createPix(.sample(uniqueReference("f1"))).outcome == .created)
        try await fake.fault("syncpay", op: "create", kind: "expired_token")
        let o = await gw.createPix(.sample(uniqueReference("f2")))
        #expect(o.outcome == .created)
        try await fake.fault("syncpay", op: "status", kind: "expired_token")
        #expect(await gw.getStatus(StatusQuery(transactionID: o.transactionID)).status == .pending)
        #expect(try await Self.authCount(fake) == 3)
    }

    @Test func instancesWithTheSameCredentialsShareTheToken() async throws {
        let fake = try await FakeGateways.start()
        let creds = try await Self.credentials(fake, "share")
        // Instances of one registry share the plugin's memory (one runner, or the host's).
        let registry = try await TestEnv.registry(path: try TestEnv.plugin("syncpay"))
        let a = try await registry.makeInstance(gateway: "syncpay", config: fake.config("syncpay", credentials: creds))
        let b = try await registry.makeInstance(gateway: "syncpay", config: fake.config("syncpay", credentials: creds))
        #expect(await a.createPix(.sample(uniqueReference("s1"))).outcome == .created)
        #expect(await b.createPix(.sample(uniqueReference("s2"))).outcome == .created)
        #expect(try await Self.authCount(fake) == 1)
    }

    @Test func authFailuresAreClassified() async throws {
        let fake = try await FakeGateways.start()
        _ = try await Self.credentials(fake, "auth")
        let refused = try await TestEnv.instance("syncpay", config: fake.config("syncpay", credentials: ["client_id": "bad", "client_secret": "bad"]))
        #expect(await refused.createPix(.sample(uniqueReference("r"))).outcome == .declined)
        // The token endpoint failing means the charge request never left: NOT_SENT.
        let creds = try await Self.credentials(fake, "auth5xx")
        try await fake.fault("syncpay", op: "auth", kind: "http5xx")
        let gw = try await TestEnv.instance("syncpay", config: fake.config("syncpay", credentials: creds))
        let o = await gw.createPix(.sample(uniqueReference("n")))
        #expect(o.outcome == .notSent, "\(o.message)")
        #expect(try await fake.ledger("syncpay").isEmpty)
    }
}
