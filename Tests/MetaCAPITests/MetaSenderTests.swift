import Foundation
import Testing
@testable import MetaCAPI
import Postgres
import RPC

/// The sender against the real PostgreSQL (`DATABASE_URL`), each test in its own schema, with
/// an in-process Graph API.
@Suite struct MetaSenderTests {
    let tokens = StaticMetaAccessTokens(["111": "tok-111", "222": "tok-222"])

    func sender(_ pool: PGPool, _ transport: ScriptedTransport, batch: Int = 1000, metrics: Metrics = Metrics()) -> MetaSender {
        var c = fastConfiguration()
        c.batchSize = batch
        return MetaSender(pool: pool, configuration: c, transport: transport, tokens: tokens, metrics: metrics, logger: Logger(minimum: .error))
    }

    /// Passes until nothing is due or claimed (retries come due within milliseconds here).
    func drain(_ s: MetaSender, _ pool: PGPool) async throws {
        for _ in 0..<200 {
            try await s.runPass()
            if try await statuses(pool).values.allSatisfy({ $0 != "queued" }) { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("outbox did not settle")
    }

    @Test func retriesFailuresThenDeliversExactlyOnce() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport(script: [
            MetaHTTPResponse(status: 500), MetaHTTPResponse(status: 502, body: Array("<html>".utf8)),
            .graphError(500, code: 2, transient: true), .graphError(400, code: 613), .graphError(429, code: 4),
            MetaHTTPResponse(status: 0, failure: .timeout), MetaHTTPResponse(status: 0, failure: .notSent),
        ])
        let metrics = Metrics()
        let s = sender(pool, transport, metrics: metrics)
        #expect(try await MetaOutbox.enqueue([testEvent("e1"), testEvent("e1")], pool: pool) == 1)  // duplicates ignored
        try await drain(s, pool)
        #expect(transport.accepted == ["e1"])
        #expect(transport.requests.count == 8)
        let url = transport.requests[0].url
        #expect(url == "http://meta.test/v21.0/111/events?access_token=tok-111")
        let (attempts, status) = try await pool.withConnection { c in
            let r = try c.query("SELECT attempts, status FROM meta_events WHERE event_id = 'e1'").first!
            return (try r.int("attempts") ?? 0, try r.string("status") ?? "")
        }
        #expect(attempts == 8 && status == "sent")
        #expect(metrics.render().contains("pixtrack_meta_events_failed_total{event_name=\"PageView\"} 7"))
        #expect(metrics.render().contains("pixtrack_meta_events_sent_total{event_name=\"PageView\"} 1"))
        await pool.close()
    }

    @Test func code100SplitsTheBatchAndParksOnlyTheBadEvent() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport(rejectEventIDs: ["bad"])
        let s = sender(pool, transport)
        try await MetaOutbox.enqueue(["a", "b", "bad", "c", "d"].map { testEvent($0) }, pool: pool)
        try await drain(s, pool)
        #expect(Set(transport.accepted) == ["a", "b", "c", "d"] && transport.accepted.count == 4)
        let st = try await statuses(pool)
        #expect(st["bad"] == "parked" && st["a"] == "sent" && st["d"] == "sent")
        #expect(transport.requests.first?.eventIDs.count == 5)
        await pool.close()
    }

    @Test func tokenErrorsAndMissingTokensPark() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport(script: [.graphError(400, code: 190)])
        let s = sender(pool, transport)
        try await MetaOutbox.enqueue([testEvent("t1"), testEvent("nopixel", pixel: "999")], pool: pool)
        try await drain(s, pool)
        let reasons = try await pool.withConnection { c in
            try c.query("SELECT event_id, status, last_error FROM meta_events ORDER BY event_id").map {
                "\(try $0.string("event_id")!):\(try $0.string("status")!):\(try $0.string("last_error") ?? "")"
            }
        }
        #expect(reasons[0].hasPrefix("nopixel:parked:no Conversions API access token"))
        #expect(reasons[1].hasPrefix("t1:parked:graph code 190"))
        #expect(transport.accepted.isEmpty)
        await pool.close()
    }

    @Test func parkedEventsAreRequeuedOnceTheCauseIsFixed() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport()
        let old = Int64(Date().timeIntervalSince1970) - 7 * 86_400 - 5
        // Pixel 999 has no token: everything of it parks. Pixel 222 has one: delivered.
        try await MetaOutbox.enqueue([testEvent("p1", pixel: "999"), testEvent("p2", pixel: "999"),
                                      testEvent("other", pixel: "222")], pool: pool)
        try await drain(sender(pool, transport), pool)
        // An old parked event (parked before it aged): it stays parked.
        try await MetaOutbox.enqueue([testEvent("aged", pixel: "999", time: old)], pool: pool)
        try await pool.withConnection { _ = try $0.execute("UPDATE meta_events SET status = 'parked' WHERE event_id = 'aged'") }
        #expect(try await statuses(pool) == ["p1": "parked", "p2": "parked", "aged": "parked", "other": "sent"])

        let dry = try await MetaOutbox.requeueParked(pixelID: "999", dryRun: true, pool: pool)
        #expect(dry == MetaOutbox.Requeued(requeued: 2, tooOld: 1))
        #expect(try await statuses(pool)["p1"] == "parked", "a dry run changes nothing")
        #expect(try await MetaOutbox.requeueParked(pixelID: "999", eventIDs: ["p1", "x\",'y]\\", "aged"], dryRun: true, pool: pool)
                == MetaOutbox.Requeued(requeued: 1, tooOld: 1))
        #expect(try await MetaOutbox.requeueParked(pixelID: "999", eventName: "Purchase", pool: pool)
                == MetaOutbox.Requeued(requeued: 0, tooOld: 0))
        #expect(try await MetaOutbox.requeueParked(pixelID: "nope", pool: pool) == MetaOutbox.Requeued(requeued: 0, tooOld: 0))

        // The operator configured the token: re-queue, then one delivery each.
        #expect(try await MetaOutbox.requeueParked(pixelID: "999", eventName: "PageView", pool: pool)
                == MetaOutbox.Requeued(requeued: 2, tooOld: 1))
        let requeued = try await trail(pool, "p1")
        #expect(requeued.hasPrefix("queued|0|requeued after: no Conversions API access token"), "\(requeued)")
        let fixed = MetaSender(pool: pool, configuration: fastConfiguration(), transport: transport,
                               tokens: StaticMetaAccessTokens(["999": "tok-999", "222": "tok-222"]), metrics: Metrics(),
                               logger: Logger(minimum: .error))
        try await drain(fixed, pool)
        #expect(try await statuses(pool) == ["p1": "sent", "p2": "sent", "aged": "parked", "other": "sent"])
        #expect(transport.accepted.sorted() == ["other", "p1", "p2"])
        #expect(try await trail(pool, "p1").hasPrefix("sent|1|"))
        #expect(try await MetaOutbox.requeueParked(pixelID: "999", pool: pool) == MetaOutbox.Requeued(requeued: 0, tooOld: 1))
        await pool.close()
    }

    @Test func anUnansweredPurchaseIsParkedNotSentTwiceWhilePageViewsRetry() async throws {
        for failure in [MetaHTTPResponse.Failure.timeout, .transport] {
            let pool = try await MetaTestEnv.isolatedPool()
            // The first request "reaches Meta" (recorded as accepted by the transport below)
            // but its answer is lost; then every request succeeds.
            let transport = ScriptedTransport(script: [MetaHTTPResponse(status: 0, failure: failure)])
            let visitor = MetaEvent.WebsiteVisitor(clientIP: "203.0.113.1", userAgent: "UA", fbp: "", fbc: "", externalIDs: ["7"])
            func purchase(_ id: String) -> MetaEvent {
                MetaEvent.website(pixelID: "111", eventName: MetaEvent.purchaseName, eventID: id,
                                  eventTime: Int64(Date().timeIntervalSince1970), eventSourceURL: "https://x.test/go/a",
                                  visitor: visitor, customData: ["currency": "BRL", "value": .reais(cents: 1990)])
            }
            try await MetaOutbox.enqueue([testEvent("pv1"), purchase("purchase_1")], pool: pool)
            try await drain(sender(pool, transport), pool)
            #expect(transport.requests.count == 2 && transport.requests[0].eventIDs.sorted() == ["purchase_1", "pv1"])
            #expect(transport.accepted == ["pv1"], "only the PageView went out again")
            let parked = try await trail(pool, "purchase_1")
            #expect(parked.hasPrefix("parked|1|sent without an answer: Meta may already count this Purchase"), "\(parked)")
            #expect(parked.contains("transport: \(failure.rawValue)"))
            // Not-sent failures and 5xx are safe to retry, Purchase included.
            let safe = ScriptedTransport(script: [MetaHTTPResponse(status: 0, failure: .notSent), MetaHTTPResponse(status: 503)])
            try await MetaOutbox.enqueue([purchase("purchase_2")], pool: pool)
            try await drain(sender(pool, safe), pool)
            let second = try await trail(pool, "purchase_2")
            #expect(safe.accepted == ["purchase_2"] && safe.requests.count == 3, "\(safe.requests.map(\.eventIDs)) \(second)")
            await pool.close()
        }
    }

    @Test func rowsADeadSenderLeftSendingAreRecoveredWithoutResendingAPurchase() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let visitor = MetaEvent.WebsiteVisitor(clientIP: "203.0.113.1", userAgent: "UA", fbp: "", fbc: "", externalIDs: ["7"])
        let purchase = MetaEvent.website(pixelID: "111", eventName: MetaEvent.purchaseName, eventID: "purchase_9",
                                         eventTime: Int64(Date().timeIntervalSince1970), eventSourceURL: "https://x.test/go/a",
                                         visitor: visitor, customData: ["currency": "BRL", "value": .reais(cents: 1990)])
        try await MetaOutbox.enqueue([testEvent("pv-old"), purchase, testEvent("pv-live")], pool: pool)
        // A sender claimed these and died mid-POST an hour ago; "pv-live" belongs to a live
        // sender that stamped it just now (its lease is running).
        try await pool.withConnection { c in
            try c.execute("UPDATE meta_events SET status = 'sending', updated_at = now() - interval '1 hour' WHERE event_id <> 'pv-live'")
            try c.execute("UPDATE meta_events SET status = 'sending', updated_at = now() WHERE event_id = 'pv-live'")
        }
        let transport = ScriptedTransport()
        let metrics = Metrics()
        let result = try await sender(pool, transport, metrics: metrics).runPass()
        #expect(result.parked == 1)
        #expect(try await trail(pool, "purchase_9").hasPrefix("parked|1|sent without an answer"))
        #expect(try await statuses(pool)["pv-live"] == "sending", "a live sender's row is left alone")
        // The PageView went back to the queue and out again; the Purchase was never re-sent.
        try await sender(pool, transport).runPass()
        #expect(transport.accepted == ["pv-old"])
        #expect(try await statuses(pool)["pv-old"] == "sent")
        #expect(metrics.render().contains("pixtrack_meta_events_parked_total{event_name=\"Purchase\"} 1"))
        await pool.close()
    }

    @Test func claimedRowsAreCommittedAsSendingBeforeThePost() async throws {
        let (pool, url) = try await MetaTestEnv.isolated()
        try await MetaOutbox.enqueue([testEvent("s1")], pool: pool)
        // The transport looks at the table from another connection while "on the wire": what a
        // crash at that moment would leave behind.
        let seen = ScriptedTransport(onPost: {
            guard let c = try? PGConnection.connect(url: url) else { return "no connection" }
            defer { c.close() }
            return (try? c.query("SELECT status FROM meta_events WHERE event_id = 's1'").first?.string("status")) ?? "no row"
        })
        try await sender(pool, seen).runPass()
        #expect(seen.observed == ["sending"])
        #expect(try await statuses(pool)["s1"] == "sent")
        await pool.close()
    }

    /// "status|attempts|last_error" of one event.
    func trail(_ pool: PGPool, _ eventID: String) async throws -> String {
        try await pool.withConnection { c in
            try c.query("SELECT status, attempts, last_error FROM meta_events WHERE event_id = $1", [.text(eventID)]).map {
                "\(try $0.string("status") ?? "")|\(try $0.int("attempts") ?? -1)|\(try $0.string("last_error") ?? "")"
            }.first ?? "missing"
        }
    }

    @Test func eventsOlderThanSevenDaysAreDroppedUnsent() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport()
        let metrics = Metrics()
        let s = sender(pool, transport, metrics: metrics)
        let old = Int64(Date().timeIntervalSince1970) - 7 * 86_400 - 5
        try await MetaOutbox.enqueue([testEvent("old", time: old), testEvent("new")], pool: pool)
        let r = try await s.runPass()
        #expect(r.dropped == 1 && r.sent == 1 && transport.accepted == ["new"])
        #expect(metrics.render().contains("pixtrack_meta_events_dropped_total{event_name=\"PageView\"} 1"))
        await pool.close()
    }

    @Test func batchesPerPixelAndTestEventCodeUpToBatchSize() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport()
        let s = sender(pool, transport, batch: 3)
        var events = (0..<5).map { testEvent("p1-\($0)") } + (0..<2).map { testEvent("p2-\($0)", pixel: "222") }
        events[0].testEventCode = "TEST9"
        try await MetaOutbox.enqueue(events, pool: pool)
        try await drain(s, pool)
        #expect(transport.accepted.count == 7)
        #expect(transport.requests.allSatisfy { $0.eventIDs.count <= 3 })
        let coded = transport.requests.filter { $0.body["test_event_code"] == "TEST9" }
        #expect(coded.count == 1 && coded[0].eventIDs == ["p1-0"])
        #expect(transport.requests.filter { $0.url.contains("/222/") }.allSatisfy { $0.eventIDs.allSatisfy { $0.hasPrefix("p2") } })
        await pool.close()
    }

    @Test func twoSendersDrainOneQueueWithoutDoubleSends() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport(delay: .milliseconds(3))
        let one = sender(pool, transport, batch: 10), two = sender(pool, transport, batch: 10)
        try await MetaOutbox.enqueue((0..<300).map { testEvent("ev\($0)", pixel: $0 % 2 == 0 ? "111" : "222") }, pool: pool)
        one.start()
        two.start()
        for _ in 0..<500 {
            if try await statuses(pool).values.allSatisfy({ $0 == "sent" }) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        await one.shutdown(grace: .seconds(1))
        await two.shutdown(grace: .seconds(1))
        let accepted = transport.accepted
        #expect(accepted.count == 300 && Set(accepted).count == 300)
        await pool.close()
    }

    @Test func wakeUpSendsAtOnceAndShutdownDrains() async throws {
        let pool = try await MetaTestEnv.isolatedPool()
        let transport = ScriptedTransport()
        var c = fastConfiguration()
        c.pollInterval = .seconds(30)
        let s = MetaSender(pool: pool, configuration: c, transport: transport, tokens: tokens, logger: Logger(minimum: .error))
        s.start()
        try await Task.sleep(for: .milliseconds(50))
        try await MetaOutbox.enqueue([testEvent("w1")], pool: pool)
        s.wakeUp()
        for _ in 0..<100 where transport.accepted.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(transport.accepted == ["w1"])
        try await MetaOutbox.enqueue([testEvent("w2")], pool: pool)
        await s.shutdown(grace: .seconds(2))
        #expect(transport.accepted == ["w1", "w2"])
        await pool.close()
    }
}
