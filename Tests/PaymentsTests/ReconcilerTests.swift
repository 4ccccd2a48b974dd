import Glibc
import Synchronization
import PluginHost
import Postgres
import RPC
import Testing
@testable import Payments

/// `Reconciler.runPass` with a scripted gateway and real PostgreSQL. The schedule lives in the
/// rows (`next_check_at`, `created_at`, against the database's clock): a test "waits" by
/// moving a row's time, never by sleeping.
@Suite struct ReconcilerTests {
    typealias H = PaymentHarness

    /// Timeout 1 s; checks 60 s apart, doubling, at most 150 s; 4 checks.
    static func schedule(_ c: inout PaymentConfiguration) {
        c.gatewayTimeoutMs = 1_000
        c.reconcileBackoffBaseMs = 60_000
        c.reconcileBackoffMaxMs = 150_000
        c.reconcileMaxChecks = 4
    }

    /// Makes a payment look created `seconds` ago (past the gateway timeout of its create call).
    static func age(_ h: H, _ id: Int64, seconds: Int) async throws {
        try await h.pool.withConnection { c in
            try c.execute("UPDATE payments SET created_at = now() - make_interval(secs => $2::bigint) WHERE id = $1",
                          [.int(id), .int(Int64(seconds))])
        }
    }

    static func nowMs() -> Int64 { Int64(time(nil)) * 1000 }

    @Test func aPendingVerificationYoungerThanTheGatewayTimeoutIsLeftToItsCall() async throws {
        let h = try await H(configure: Self.schedule)
        let p = try await h.payment(.createAnswered(.unknown))
        let young = try await Reconciler(service: h.service).runPass()
        #expect(young.claimed == 0 && h.gateway.calls.statusQueries.isEmpty)
        // Past timeout + 1 s it is due.
        try await Self.age(h, p.id, seconds: 3)
        h.gateway.answerStatus(.answered(.pending, txid: "tx-found", amount: 1990, reference: p.reference))
        let old = try await Reconciler(service: h.service).runPass()
        #expect(old.claimed == 1 && old.changed == 1)
        // Looked up by reference: the create answer (and its transaction id) was lost.
        #expect(h.gateway.calls.statusQueries == [StatusQuery(reference: p.reference)])
        let found = try await h.reload(p.id)
        #expect(found.status == .pending && found.transactionID == "tx-found")
        await h.close()
    }

    @Test func unansweredChecksBackOffThenTheLastOneLeavesItUnresolvedNeverFailed() async throws {
        let h = try await H(configure: Self.schedule)
        let reconciler = Reconciler(service: h.service)
        let p = try await h.payment(.createAnswered(.unknown))
        try await Self.age(h, p.id, seconds: 10)
        h.gateway.answerStatus(.unreachable)

        // Check n is followed by a wait of 60 s · 2^(n-1), at most 150 s.
        for (check, delay) in [(1, 60.0), (2, 120.0), (3, 150.0)] {
            let r = try await reconciler.runPass()
            #expect(r.claimed == 1 && r.unanswered == 1 && r.gaveUp == 0 && r.changed == 0, "check \(check): \(r)")
            let row = try await h.reload(p.id)
            #expect(row.status == .pendingVerification && row.checks == check && !row.flagged)
            let wait = try await h.secondsUntil("next_check_at", of: "payments", id: p.id)
            #expect(wait > delay - 10 && wait <= delay + 1, "check \(check) waits \(wait) s")
            #expect(try await reconciler.runPass().claimed == 0, "due again before its delay")
            try await h.makeDue("next_check_at", of: "payments", id: p.id)
        }
        let last = try await reconciler.runPass()
        #expect(last.claimed == 1 && last.gaveUp == 1)
        let given = try await h.reload(p.id)
        #expect(given.status == .unresolved && given.flagged && given.reconcileDone && given.checks == 4)
        #expect(given.reviewReason == PaymentMachine.unresolvedReason)
        let history = try await h.history(p.id)
        #expect(history.last == "pending_verification->unresolved (reconciler)")
        #expect(!history.contains { $0.contains("failed") })
        // Given up: not polled again, whatever its schedule says.
        try await h.makeDue("next_check_at", of: "payments", id: p.id)
        #expect(try await reconciler.runPass().claimed == 0)
        #expect(h.gateway.calls.statusQueries.count == 4)
        await h.close()
    }

    @Test func aGatewayThatKeepsSayingNotFoundEndsUnresolvedTooNotFailed() async throws {
        let h = try await H { Self.schedule(&$0); $0.reconcileMaxChecks = 2 }
        let reconciler = Reconciler(service: h.service)
        let p = try await h.payment(.createAnswered(.unknown))
        try await Self.age(h, p.id, seconds: 10)
        h.gateway.answerStatus(.answered(.notFound))
        let first = try await reconciler.runPass()
        #expect(first.claimed == 1 && first.unanswered == 0 && first.gaveUp == 0)
        try await h.makeDue("next_check_at", of: "payments", id: p.id)
        let second = try await reconciler.runPass()
        #expect(second.gaveUp == 1)
        #expect(try await h.reload(p.id).status == .unresolved)
        await h.close()
    }

    @Test func withNothingToAskTheGatewayWithItGivesUpAfterEveryCheck() async throws {
        // A plugin that cannot look charges up by reference, and no transaction id.
        let h = try await H(gateway: ScriptedGateway(statusByReference: false)) { Self.schedule(&$0); $0.reconcileMaxChecks = 2 }
        let reconciler = Reconciler(service: h.service)
        let p = try await h.payment(.createAnswered(.unknown))
        try await Self.age(h, p.id, seconds: 10)
        #expect(try await reconciler.runPass().unanswered == 1)
        try await h.makeDue("next_check_at", of: "payments", id: p.id)
        #expect(try await reconciler.runPass().gaveUp == 1)
        #expect(try await h.reload(p.id).status == .unresolved)
        #expect(h.gateway.calls.statusQueries.isEmpty)
        await h.close()
    }

    @Test func anAnswerSettlesThePaymentAndEndsItsPolling() async throws {
        let h = try await H(configure: Self.schedule)
        let reconciler = Reconciler(service: h.service)
        var facts = GatewayFacts()
        facts.transactionID = "tx-paid"
        let p = try await h.payment(facts: facts, .createAnswered(.created))
        h.gateway.answerStatus(.answered(.paid, txid: "tx-paid", amount: 1990))
        let r = try await reconciler.runPass()
        #expect(r.claimed == 1 && r.changed == 1)
        #expect(h.gateway.calls.statusQueries == [StatusQuery(transactionID: "tx-paid", reference: p.reference)])
        #expect(try await h.reload(p.id).status == .paid)
        #expect(try await h.history(p.id).last == "pending->paid (reconciler)")
        // Paid: never claimed again, however old and due.
        try await Self.age(h, p.id, seconds: 10)
        try await h.makeDue("next_check_at", of: "payments", id: p.id)
        #expect(try await reconciler.runPass().claimed == 0)
        await h.close()
    }

    @Test func aPendingPixIsPolledUntilItsExpiryPlusGraceThenFlaggedStillPending() async throws {
        let h = try await H { Self.schedule(&$0); $0.pendingGraceMs = 0 }
        let reconciler = Reconciler(service: h.service)
        var expired = GatewayFacts()
        expired.transactionID = "tx-expired"
        expired.expiresAtMs = Self.nowMs() - 60_000
        var live = GatewayFacts()
        live.transactionID = "tx-live"
        live.expiresAtMs = Self.nowMs() + 3_600_000
        let old = try await h.payment(facts: expired, .createAnswered(.created))
        let fresh = try await h.payment(facts: live, .createAnswered(.created))
        h.gateway.answerStatus(.answered(.pending))

        let r = try await reconciler.runPass()
        #expect(r.claimed == 2 && r.gaveUp == 1 && r.changed == 0)
        let o = try await h.reload(old.id)
        #expect(o.status == .pending && o.flagged && o.reconcileDone)
        #expect(o.reviewReason.contains("still pending"))
        let f = try await h.reload(fresh.id)
        #expect(f.status == .pending && !f.flagged && !f.reconcileDone && f.checks == 1)
        await h.close()
    }

    @Test func aPaymentAnotherInstanceIsCheckingIsSkippedNotWaitedFor() async throws {
        let h = try await H(configure: Self.schedule)
        var ids: [Int64] = []
        for _ in 0..<8 {
            let p = try await h.payment(.createAnswered(.unknown))
            try await Self.age(h, p.id, seconds: 10)
            ids.append(p.id)
        }
        h.gateway.answerStatus(.unreachable)
        let held = Array(ids.prefix(3))
        // Another instance's claim transaction: these rows stay locked until it is told to end.
        let holder = RowLockHolder()
        let holding = Task {
            try await h.pool.transaction { c in
                _ = try c.query("SELECT id FROM payments WHERE id = ANY($1::bigint[]) FOR UPDATE",
                                [.text("{" + held.map(String.init).joined(separator: ",") + "}")])
                holder.hold()
            }
        }
        #expect(await holder.eventually { $0 == .holding }, "the rows were never locked")
        let pass = Task {
            let r = try await Reconciler(service: h.service).runPass()
            holder.passFinished()
            return r
        }
        // The pass takes the free rows and returns while the others are still locked.
        let finishedWhileHeld = await holder.eventually { _ in holder.passDone }
        holder.letGo()
        let first = try await pass.value
        try await holding.value
        #expect(finishedWhileHeld, "the pass waited for the locked rows")
        #expect(first.claimed == 5)
        #expect(Set(h.gateway.calls.statusQueries.map(\.reference)) == Set(ids.dropFirst(3).map(Payment.reference)))
        // Unlocked, the three are claimed; the five checked ones are leased until their next check.
        let second = try await Reconciler(service: h.service).runPass()
        #expect(second.claimed == 3)
        #expect(Set(h.gateway.calls.statusQueries.suffix(3).map(\.reference)) == Set(held.map(Payment.reference)))
        await h.close()
    }
}

/// Coordinates a transaction that holds row locks (blocking its connection's queue, never the
/// cooperative pool) with the test that runs a pass meanwhile.
final class RowLockHolder: Sendable {
    enum Phase: Int { case waiting, holding, released }
    private let phase = Atomic<Int>(Phase.waiting.rawValue)
    private let done = Atomic<Bool>(false)

    /// Inside the transaction: holds until `letGo`, at most 30 s.
    func hold() {
        phase.store(Phase.holding.rawValue, ordering: .releasing)
        let end = ContinuousClock.now + .seconds(30)
        while phase.load(ordering: .acquiring) == Phase.holding.rawValue, ContinuousClock.now < end { usleep(1_000) }
    }

    func letGo() { phase.store(Phase.released.rawValue, ordering: .releasing) }
    func passFinished() { done.store(true, ordering: .releasing) }
    var passDone: Bool { done.load(ordering: .acquiring) }

    /// Whether `condition` holds within 10 s.
    func eventually(_ condition: (Phase) -> Bool) async -> Bool {
        let end = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < end {
            if condition(Phase(rawValue: phase.load(ordering: .acquiring)) ?? .waiting) { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return false
    }
}
