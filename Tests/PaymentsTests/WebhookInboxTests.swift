import PluginHost
import Postgres
import RPC
import Testing
@testable import Payments

/// `WebhookInbox` with a scripted gateway and real PostgreSQL: which payment a webhook names,
/// that only the status API moves it, and how unanswered or unmatched webhooks are retried,
/// backed off and parked.
@Suite struct WebhookInboxTests {
    typealias H = PaymentHarness

    static func created(_ txid: String, hash: String = "") -> GatewayFacts {
        var f = GatewayFacts()
        f.transactionID = txid
        f.gatewayHash = hash
        return f
    }

    /// Stores a webhook body as the route does; the scripted gateway decides what it says.
    static func store(_ inbox: WebhookInbox, gateway: String = "sandbox", processingInline: Bool = false) async throws -> Int64 {
        try await inbox.store(gateway: gateway, headers: [GatewayHeader("content-type", "application/json")],
                              body: Array(#"{"event":"test"}"#.utf8), remoteAddr: "127.0.0.1", processingInline: processingInline)
    }

    static func row(_ h: H, _ id: Int64) async throws -> (status: String, attempts: Int, paymentID: Int64, result: String) {
        let r = try #require(try await h.pool.withConnection { c in
            try c.query("SELECT status, attempts, coalesce(payment_id, 0) AS pid, coalesce(result, '') AS result FROM webhook_inbox WHERE id = $1",
                        [.int(id)]).first
        })
        return (try r.string("status") ?? "", try r.int("attempts") ?? -1, try r.int64("pid") ?? -1, try r.string("result") ?? "")
    }

    @Test func matchingTriesTransactionIDThenHashThenReferenceThenLegacyID() async throws {
        let h = try await H()
        let inbox = WebhookInbox(service: h.service)
        let a = try await h.payment(facts: Self.created("tx-A"), .createAnswered(.created))
        let b = try await h.payment(facts: Self.created("tx-B", hash: "h-B"), .createAnswered(.created))
        let c = try await h.payment()
        let d = try await h.payment()
        let legacy = "BOT7_1700000000_9f3a2c"
        try await h.pool.withConnection { try $0.execute("UPDATE payments SET legacy_payment_id = $1 WHERE id = $2", [.text(legacy), .int(d.id)]) }
        let elsewhere = try await h.payment(gateway: "paradise")

        func match(_ o: WebhookOutcome, on gateway: String = "sandbox") async throws -> Int64? {
            try await inbox.match(gateway: gateway, o)?.id
        }
        // Each id, when it finds a payment, wins over every id after it.
        #expect(try await match(.hint(txid: "tx-A", hash: "h-B", reference: c.reference)) == a.id)
        #expect(try await match(.hint(txid: "tx-unknown", hash: "h-B", reference: c.reference)) == b.id)
        #expect(try await match(.hint(txid: "tx-unknown", hash: "h-unknown", reference: c.reference)) == c.id)
        #expect(try await match(.hint(txid: "tx-unknown", hash: "h-unknown", reference: legacy)) == d.id)
        // Exact only, and only on the webhook's own gateway.
        #expect(try await match(.hint(txid: "tx-a")) == nil)
        #expect(try await match(.hint(reference: "PAY-\(c.id)0")) == nil)
        #expect(try await match(.hint(reference: elsewhere.reference)) == nil)
        #expect(try await match(.hint(reference: elsewhere.reference), on: "paradise") == elsewhere.id)
        #expect(try await match(.hint(txid: "tx-A"), on: "paradise") == nil)
        #expect(try await match(.hint(hash: "h-B"), on: "paradise") == nil)
        #expect(try await match(.hint(reference: "BOT7_1700000000_000000")) == nil)
        await h.close()
    }

    @Test func aWebhookMovesNothingUntilTheStatusAPIConfirms() async throws {
        let h = try await H()
        let inbox = WebhookInbox(service: h.service)
        let p = try await h.payment(facts: Self.created("tx-P"), .createAnswered(.created))
        // The webhook says paid; the gateway's status API says still pending.
        h.gateway.answerStatus(.answered(.pending, txid: "tx-P", amount: 1990, reference: p.reference))
        let first = await inbox.process(id: try await Self.store(inbox), gateway: "sandbox",
                                        verdict: .parsed(.hint(txid: "tx-P", status: .paid, amount: 1990)), attempts: 1)
        #expect(first.paymentID == p.id && first.status == .pending && first.inboxStatus == "processed")
        #expect(try await h.reload(p.id).status == .pending)
        #expect(try await h.count("meta_events") == 0)
        let asked = try #require(h.gateway.calls.statusQueries.first)
        #expect(asked == StatusQuery(transactionID: "tx-P", reference: p.reference))

        h.gateway.answerStatus(.answered(.paid, txid: "tx-P", amount: 1990, reference: p.reference))
        let inboxID = try await Self.store(inbox)
        let second = await inbox.process(id: inboxID, gateway: "sandbox",
                                         verdict: .parsed(.hint(txid: "tx-P", status: .paid)), attempts: 1)
        #expect(second.status == .paid && second.inboxStatus == "processed")
        #expect(try await h.reload(p.id).status == .paid)
        #expect(try await h.history(p.id).last == "pending->paid (webhook)")
        // The first move to paid queued the Purchase, once.
        #expect(try await h.count("meta_events") == 1)
        let r = try await Self.row(h, inboxID)
        #expect(r.status == "processed" && r.paymentID == p.id && r.result.contains("pending -> paid"))
        await h.close()
    }

    @Test func aHintedTransactionIDIsBoundOnlyWhenTheGatewayAgrees() async throws {
        let h = try await H()
        let inbox = WebhookInbox(service: h.service)
        // Three payments whose create answer was lost: no transaction id yet.
        let agreed = try await h.payment(.createAnswered(.unknown))
        let otherRef = try await h.payment(.createAnswered(.unknown))
        let otherAmount = try await h.payment(.createAnswered(.unknown))

        h.gateway.answerStatus(.answered(.paid, txid: "tx-late", amount: 1990, reference: agreed.reference))
        _ = await inbox.process(id: 0, gateway: "sandbox", verdict: .parsed(.hint(txid: "tx-late", reference: agreed.reference)), attempts: 1)
        #expect(h.gateway.calls.statusQueries.last?.transactionID == "tx-late")
        let bound = try await h.reload(agreed.id)
        #expect(bound.status == .paid && bound.transactionID == "tx-late" && !bound.flagged)

        // The gateway says the charge is another of our payments: flagged, nothing bound.
        h.gateway.answerStatus(.answered(.paid, txid: "tx-x", amount: 1990, reference: agreed.reference))
        _ = await inbox.process(id: 0, gateway: "sandbox", verdict: .parsed(.hint(txid: "tx-x", reference: otherRef.reference)), attempts: 1)
        let contradicted = try await h.reload(otherRef.id)
        #expect(contradicted.status == .pendingVerification && contradicted.transactionID.isEmpty && contradicted.flagged)

        // The hinted charge is for another amount: another charge, nothing bound.
        h.gateway.answerStatus(.answered(.paid, txid: "tx-y", amount: 2990))
        _ = await inbox.process(id: 0, gateway: "sandbox", verdict: .parsed(.hint(txid: "tx-y", reference: otherAmount.reference)), attempts: 1)
        let wrongAmount = try await h.reload(otherAmount.id)
        #expect(wrongAmount.status == .pendingVerification && wrongAmount.transactionID.isEmpty && wrongAmount.flagged)
        #expect(wrongAmount.reviewReason.contains("2990"))

        // A transaction id another payment already holds is never moved.
        h.gateway.answerStatus(.answered(.paid, txid: "tx-late", amount: 1990))
        let fourth = try await h.payment(.createAnswered(.unknown))
        _ = await inbox.process(id: 0, gateway: "sandbox", verdict: .parsed(.hint(txid: "tx-late-2", reference: fourth.reference)), attempts: 1)
        let kept = try await h.reload(fourth.id)
        #expect(kept.transactionID.isEmpty && kept.flagged && kept.status == .pendingVerification)
        #expect(try await h.reload(agreed.id).transactionID == "tx-late")
        await h.close()
    }

    @Test func anUnansweredStatusCheckIsRetriedWithGrowingDelaysThenParked() async throws {
        let h = try await H {
            $0.webhookMaxAttempts = 4
            $0.webhookRetryMs = 60_000
            $0.webhookRetryMaxMs = 100_000
        }
        let inbox = WebhookInbox(service: h.service)
        let p = try await h.payment(facts: Self.created("tx-R"), .createAnswered(.created))
        h.gateway.answerWebhook(.hint(txid: "tx-R"))
        h.gateway.answerStatus(.unreachable)
        let id = try await Self.store(inbox)

        // Attempt n waits 60 s · 2^(n-1), at most 100 s, before attempt n + 1.
        for (attempt, delay) in [(1, 60.0), (2, 100.0), (3, 100.0)] {
            #expect(try await inbox.processDue() == 1)
            let r = try await Self.row(h, id)
            #expect(r.status == "retry" && r.attempts == attempt && r.paymentID == p.id, "attempt \(attempt): \(r)")
            let wait = try await h.secondsUntil("next_attempt_at", of: "webhook_inbox", id: id)
            #expect(wait > delay - 10 && wait <= delay + 1, "attempt \(attempt) waits \(wait) s")
            // Not due before its delay has passed.
            #expect(try await inbox.processDue() == 0)
            try await h.makeDue("next_attempt_at", of: "webhook_inbox", id: id)
        }
        #expect(try await inbox.processDue() == 1)
        let parked = try await Self.row(h, id)
        #expect(parked.status == "parked" && parked.attempts == 4 && parked.result.contains("status check"))
        try await h.makeDue("next_attempt_at", of: "webhook_inbox", id: id)
        #expect(try await inbox.processDue() == 0)
        #expect(h.gateway.calls.webhooks.count == 4 && h.gateway.calls.statusQueries.count == 4)
        // The body and its kept headers reached the plugin as stored.
        #expect(h.gateway.calls.webhooks.first?.body == Array(#"{"event":"test"}"#.utf8))
        #expect(h.gateway.calls.webhooks.first?.headers == [GatewayHeader("content-type", "application/json")])
        #expect(try await h.reload(p.id).status == .pending)
        await h.close()
    }

    @Test func anUnmatchedWebhookIsTriedAgainAndMatchesOnceThePaymentExists() async throws {
        let h = try await H { $0.webhookRetryMs = 30_000 }
        let inbox = WebhookInbox(service: h.service)
        h.gateway.answerWebhook(.hint(txid: "tx-early"))
        let id = try await Self.store(inbox)
        #expect(try await inbox.processDue() == 1)
        let unmatched = try await Self.row(h, id)
        #expect(unmatched.status == "unmatched" && unmatched.paymentID == 0)
        #expect(h.gateway.calls.statusQueries.isEmpty)
        let wait = try await h.secondsUntil("next_attempt_at", of: "webhook_inbox", id: id)
        #expect(wait > 20 && wait <= 31, "waits \(wait) s")

        let p = try await h.payment(facts: Self.created("tx-early"), .createAnswered(.created))
        h.gateway.answerStatus(.answered(.paid, txid: "tx-early", amount: 1990))
        try await h.makeDue("next_attempt_at", of: "webhook_inbox", id: id)
        #expect(try await inbox.processDue() == 1)
        let done = try await Self.row(h, id)
        #expect(done.status == "processed" && done.paymentID == p.id && done.attempts == 2)
        #expect(try await h.reload(p.id).status == .paid)
        await h.close()
    }

    @Test func aBodyNamingNoChargeIsRejectedAndNeverRetried() async throws {
        let h = try await H()
        let inbox = WebhookInbox(service: h.service)
        h.gateway.answerWebhook(WebhookOutcome())
        let id = try await Self.store(inbox)
        #expect(try await inbox.processDue() == 1)
        #expect(try await Self.row(h, id).status == "rejected")
        try await h.makeDue("next_attempt_at", of: "webhook_inbox", id: id)
        #expect(try await inbox.processDue() == 0)
        #expect(h.gateway.calls.webhooks.count == 1 && h.gateway.calls.statusQueries.isEmpty)
        await h.close()
    }

    @Test func aWebhookThatCannotBeParsedYetIsRetried() async throws {
        let h = try await H()
        let inbox = WebhookInbox(service: h.service)
        // No bot uses this gateway: nothing to parse it with, for now.
        let orphan = try await Self.store(inbox, gateway: "paradise")
        // The plugin did not answer in time: ours to retry.
        let slow = try await Self.store(inbox)
        #expect(try await inbox.processDue() == 2)
        let o = try await Self.row(h, orphan)
        #expect(o.status == "retry" && o.result.contains("no bot account uses gateway 'paradise'"))
        let s = try await Self.row(h, slow)
        #expect(s.status == "retry" && s.result.contains("timeout"))
        await h.close()
    }

    @Test func aWebhookWhoseWorkerDiedIsParkedWithoutAnotherTry() async throws {
        let h = try await H { $0.webhookMaxAttempts = 1 }
        let inbox = WebhookInbox(service: h.service)
        // Stored for inline processing (its one attempt), and never recorded.
        let id = try await Self.store(inbox, processingInline: true)
        #expect(try await inbox.processDue() == 0)
        #expect(try await Self.row(h, id).status == "new")  // still leased to its worker
        try await h.makeDue("next_attempt_at", of: "webhook_inbox", id: id)
        #expect(try await inbox.processDue() == 0)
        let r = try await Self.row(h, id)
        #expect(r.status == "parked" && r.result.hasPrefix("processing never finished after 1 attempts"))
        #expect(h.gateway.calls.webhooks.isEmpty)
        await h.close()
    }
}
