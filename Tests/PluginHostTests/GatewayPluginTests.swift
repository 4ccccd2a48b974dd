import HTTPClient
import PluginHost
import PluginKit
import Testing

/// Each real-gateway plugin against the fake of its gateway (Tests/fakes/fake_gateways.py).
@Suite struct GatewayPluginTests {
    static let gateways = ["atomopay", "paradise", "umbrellapag", "syncpay"]

    static func instance(_ g: String, _ fake: FakeGateways, timeoutMs: Int64 = 15_000, credentials: [String: String]? = nil) async throws -> GatewayInstance {
        try await TestEnv.instance(g, config: fake.config(g, credentials: credentials), timeoutMs: timeoutMs)
    }

    /// The query for a created charge (ÁtomoPay looks up by hash).
    static func query(_ o: CreatePixOutcome) -> StatusQuery {
        StatusQuery(transactionID: o.transactionID, gatewayHash: o.gatewayHash)
    }

    @Test(arguments: gateways)
    func createsAChargeTheGatewayRecorded(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake)
        let ref = uniqueReference(g)
        let o = await gw.createPix(.sample(ref, cents: 1990))
        #expect(o.outcome == .created, "\(o.message)")
        #expect(BRCode.isValid(o.pixCode))
        let ledger = try await fake.ledger(g)
        #expect(ledger.count == 1)
        #expect(ledger.first?["reference"]?.string == ref)
        #expect(ledger.first?["amount_cents"]?.int64 == 1990)
        #expect(ledger.first?["id"]?.text == o.transactionID)
        // Credentials went where the gateway expects them, and the secret never reached the URL
        // except where the gateway demands it (ÁtomoPay's api_token).
        let req = try await fake.requests(g).last!
        switch g {
        case "atomopay": #expect(req["query"]?["api_token"]?.string == "atomo-token")
        case "paradise": #expect(req["headers"]?["x-api-key"]?.string == "paradise-key")
        case "umbrellapag": #expect(req["headers"]?["x-api-key"]?.string == "umbrella-key")
        default: #expect(req["headers"]?["authorization"]?.string?.hasPrefix("Bearer sp_") == true)
        }
        if g == "syncpay" { #expect(req["body"]?.string?.contains(#""amount":19.90"#) == true) }
    }

    static let statusWords: [String: [(String, GatewayStatus)]] = [
        "atomopay": [("waiting_payment", .pending), ("paid", .paid), ("refused", .failed), ("canceled", .failed), ("expired", .expired),
                     ("refunded", .refunded), ("chargedback", .chargeback), ("something_new", .unknown)],
        "paradise": [("pending", .pending), ("paid", .paid), ("approved", .paid), ("failed", .failed), ("expired", .expired),
                     ("refunded", .refunded), ("chargeback", .chargeback), ("weird", .unknown)],
        "umbrellapag": [("WAITING_PAYMENT", .pending), ("PAID", .paid), ("REFUSED", .failed), ("CANCELED", .failed), ("EXPIRED", .expired),
                        ("REFUNDED", .refunded), ("CHARGEDBACK", .chargeback), ("IN_LIMBO", .unknown)],
        "syncpay": [("pending", .pending), ("completed", .paid), ("PAID_OUT", .paid), ("failed", .failed), ("expired", .expired),
                    ("refunded", .refunded), ("MED", .chargeback), ("strange", .unknown)],
    ]

    @Test(arguments: gateways)
    func mapsEveryGatewayStatusAndNeverGuessesPaid(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake)
        let o = await gw.createPix(.sample(uniqueReference(g), cents: 4321))
        try #require(o.outcome == .created)
        let ledgerID = try await fake.ledger(g).first!["id"]!.text!
        for (word, expected) in Self.statusWords[g]! {
            try await fake.setStatus(g, id: ledgerID, word)
            let s = await gw.getStatus(Self.query(o))
            #expect(s.status == expected, "\(g) \(word): \(s.message) \(String(describing: s.failure))")
            #expect(s.rawStatus == word)
            #expect(s.amountCents == 4321)
        }
        let missing = await gw.getStatus(StatusQuery(transactionID: "00000000-nope", gatewayHash: g == "atomopay" ? "nope" : ""))
        #expect(missing.status == .notFound)
    }

    @Test(arguments: gateways)
    func parsesTheGatewaysWebhook(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake)
        let ref = uniqueReference(g)
        let o = await gw.createPix(.sample(ref))
        try #require(o.outcome == .created)
        let paidWord = ["atomopay": "paid", "paradise": "approved", "umbrellapag": "PAID", "syncpay": "completed"][g]!
        let ledgerID = try await fake.ledger(g).first!["id"]!.text!
        // No postback URL given to the fake: it hands back the webhook it would have posted.
        let delivery = try await fake.control("webhook", .object(["gateway": .string(g), "id": .string(ledgerID), "status": .string(paidWord), "url": .string("")]))
        let headers = (delivery["headers"]?.object ?? [:]).map { GatewayHeader($0.key, $0.value.text ?? "") }
        let hook = await gw.parseWebhook(WebhookRequest(headers: headers, body: delivery["body"]!.bytes))
        #expect(hook.failure == nil)
        #expect(hook.status == .paid)
        #expect(hook.transactionID == o.transactionID)
        #expect(hook.reference == ref)
        #expect(hook.amountCents == 1990)
        #expect(!hook.eventID.isEmpty)
        // Garbage is rejected, never paid.
        let junk = await gw.parseWebhook(WebhookRequest(body: Array("<html>".utf8)))
        #expect(junk.status != .paid && junk.failure != nil)
    }

    /// Every webhook shape the fake posts (each seen from the real gateway), and what the plugin
    /// must read from it: which ids (`tx` the transaction id, `hash` the gateway hash, `ref` our
    /// reference) and which status.
    static let shapes: [(gateway: String, shape: String, tx: Bool, hash: Bool, ref: Bool, status: GatewayStatus)] = [
        ("atomopay", "id_hash", true, true, true, .paid),
        ("atomopay", "hash_status", false, true, false, .paid),
        ("atomopay", "id_payment_status", true, false, false, .paid),
        ("atomopay", "wrapped_data", true, true, true, .paid),
        ("atomopay", "wrapped_transaction", true, true, true, .paid),
        ("atomopay", "wrapped_payload", true, true, true, .paid),
        ("atomopay", "success_data", true, true, true, .paid),
        ("paradise", "new", true, false, true, .paid),
        ("paradise", "old", true, false, false, .paid),
        ("umbrellapag", "default", true, false, true, .paid),
        ("umbrellapag", "data_data", true, false, true, .paid),
        ("umbrellapag", "metadata_object", true, false, true, .paid),
        ("umbrellapag", "refunded_paid", true, false, true, .refunded),
        ("syncpay", "default", true, false, true, .paid),
        ("syncpay", "lowercase_ref", true, false, true, .paid),
        ("syncpay", "string_amount", true, false, true, .paid),
    ]

    @Test(arguments: shapes.indices)
    func readsEveryWebhookShapeOfItsGateway(_ i: Int) async throws {
        let c = Self.shapes[i]
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(c.gateway, fake)
        let ref = uniqueReference(c.gateway)
        let o = await gw.createPix(.sample(ref, cents: 3380))
        try #require(o.outcome == .created)
        let word = ["atomopay": "paid", "paradise": "paid", "umbrellapag": "PAID", "syncpay": "completed"][c.gateway]!
        let delivery = try await fake.control("webhook", .object([
            "gateway": .string(c.gateway), "id": .string(o.transactionID), "status": .string(word), "shape": .string(c.shape),
            "url": .string(""),
        ]))
        let headers = (delivery["headers"]?.object ?? [:]).map { GatewayHeader($0.key, $0.value.text ?? "") }
        let hook = await gw.parseWebhook(WebhookRequest(headers: headers, body: delivery["body"]!.bytes))
        let label = "\(c.gateway)/\(c.shape): \(delivery["body"]?.serialized ?? "")"
        #expect(hook.failure == nil, "\(label)")
        #expect(hook.status == c.status, "\(label)")
        // Each id in its own field, never one kind in the other's place.
        #expect(hook.transactionID == (c.tx ? o.transactionID : ""), "\(label)")
        #expect(hook.gatewayHash == (c.hash ? o.gatewayHash : ""), "\(label)")
        #expect(hook.reference == (c.ref ? ref : ""), "\(label)")
        #expect(hook.amountCents == 3380, "\(label)")
        #expect(!hook.eventID.isEmpty)
    }

    @Test(arguments: gateways)
    func statusAnswersEchoTheReferenceAndRefundsWinOverPaid(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake)
        let ref = uniqueReference(g)
        let o = await gw.createPix(.sample(ref))
        try #require(o.outcome == .created)
        let s = await gw.getStatus(Self.query(o))
        #expect(s.reference == ref, "\(g) status answers carry the reference")
        if g == "atomopay" { #expect(s.gatewayHash == o.gatewayHash && s.transactionID == o.transactionID) }
        // An answer that names another charge's reference is reported as it is (the host decides).
        try await fake.control("status", .object(["gateway": .string(g), "id": .string(o.transactionID),
                                                  "status": .string(["atomopay": "paid", "paradise": "paid", "umbrellapag": "PAID", "syncpay": "completed"][g]!),
                                                  "reference_override": .string("PAY-999999")]))
        #expect(await gw.getStatus(Self.query(o)).reference == "PAY-999999")
    }

    /// Faults on the create call and the outcome each must give; `charged` is whether the fake
    /// created the charge. No failed outcome may leave a charge behind (no orphan PIX).
    static let faults: [(kind: String, extra: [String: JSON], outcome: CreateOutcome, charged: Bool)] = [
        ("decline", [:], .declined, false),
        ("http5xx", [:], .unknown, false),
        ("http5xx", ["create_charge": .bool(true)], .unknown, true),
        ("reset", [:], .unknown, true),
        ("timeout", ["hang_ms": .int(3_000)], .unknown, true),
        ("malformed", [:], .unknown, true),
        ("html", [:], .unknown, true),
        ("badpix", [:], .unknown, true),
        ("missing_fields", [:], .unknown, true),
        ("wrong_types", [:], .unknown, true),
        ("latency", ["latency_ms": .int(150)], .created, true),
    ]

    @Test(arguments: gateways)
    func everyFaultGivesTheSafeOutcome(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake, timeoutMs: 1_500)
        var created: [String: CreateOutcome] = [:]
        for f in Self.faults {
            try await fake.fault(g, kind: f.kind, extra: f.extra)
            let ref = uniqueReference("\(g)-\(f.kind)")
            let o = await gw.createPix(.sample(ref))
            #expect(o.outcome == f.outcome, "\(g) \(f.kind): \(o.message) \(String(describing: o.failure))")
            created[ref] = o.outcome
            let charged = try await fake.ledger(g).contains { $0["reference"]?.string == ref }
            #expect(charged == f.charged, "\(g) \(f.kind)")
        }
        // Unreachable gateway: never sent, nothing charged.
        let down = try await TestEnv.instance(g, config: GatewayConfig(credentials: FakeGateways.credentials[g]!, baseURL: "http://127.0.0.1:1",
                                                                        options: FakeGateways.options[g] ?? [:]))
        #expect(await down.createPix(.sample(uniqueReference("down"))).outcome == .notSent)
        // Wrong credentials: the gateway refused, nothing charged.
        let wrong = FakeGateways.credentials[g]!.mapValues { _ in "wrong" }
        let refused = try await Self.instance(g, fake, credentials: wrong)
        #expect(await refused.createPix(.sample(uniqueReference("auth"))).outcome == .declined)
        // Ground truth: every charge at the gateway belongs to a payment that did not fail.
        for charge in try await fake.ledger(g) {
            let outcome = created[charge["reference"]?.string ?? ""]
            #expect(outcome == .created || outcome == .unknown, "orphan candidate \(charge.serialized)")
        }
    }

    @Test(arguments: gateways)
    func statusFaultsAreUnknownNotPaid(_ g: String) async throws {
        let fake = try await FakeGateways.start()
        let gw = try await Self.instance(g, fake, timeoutMs: 1_500)
        let o = await gw.createPix(.sample(uniqueReference(g)))
        try #require(o.outcome == .created)
        for kind in ["http5xx", "reset", "malformed", "html", "timeout"] {
            try await fake.fault(g, op: "status", kind: kind, extra: ["hang_ms": .int(3_000)])
            let s = await gw.getStatus(Self.query(o))
            #expect(s.status == .unknown, "\(g) \(kind)")
            #expect(s.failure != nil, "\(g) \(kind)")
        }
        #expect(await gw.getStatus(Self.query(o)).status == .pending)
    }

    @Test func credentialsNeverReachTheHostLog() async throws {
        // A failing request logs its URL: ÁtomoPay's api_token must be redacted there.
        let r = Redactor(secrets: ["atomo-token"])
        #expect(!r.redact("POST http://127.0.0.1:1/atomopay/api/public/v1/transactions?api_token=atomo-token").contains("atomo-token"))
    }
}
