import PluginHost
import Testing
@testable import Payments

/// The status machine, event by event (DESIGN §2).
@Suite struct PaymentMachineTests {
    typealias M = PaymentMachine

    func after(_ status: PaymentStatus, _ event: M.Event, amount: Int64 = 1990) -> (M.Action, PaymentStatus) {
        var m = M(status: status, amountCents: amount)
        let a = m.handle(event)
        return (a, m.status)
    }

    @Test func createOutcomesFromPendingVerification() {
        #expect(after(.pendingVerification, .createAnswered(.created)).1 == .pending)
        #expect(after(.pendingVerification, .createAnswered(.declined)).1 == .failed)
        #expect(after(.pendingVerification, .createAnswered(.notSent)).1 == .failed)
        let (a, s) = after(.pendingVerification, .createAnswered(.unknown))
        #expect(s == .pendingVerification)
        guard case .ignore = a else { Issue.record("unknown must change nothing"); return }
    }

    @Test func lateCreateAnswerNeverMovesBack() {
        for s in [PaymentStatus.pending, .paid, .failed, .expired, .unresolved] {
            #expect(after(s, .createAnswered(.created)).1 == s)
            #expect(after(s, .createAnswered(.declined)).1 == s)
        }
    }

    @Test func paidQueuesPurchaseOnlyWithTheRightAmount() {
        #expect(after(.pending, .gatewayReported(.paid, amountCents: 1990)).0 == .transition(to: .paid, queuePurchase: true, flag: nil))
        #expect(after(.pendingVerification, .gatewayReported(.paid, amountCents: 1990)).1 == .paid)
        let (a, s) = after(.pending, .gatewayReported(.paid, amountCents: 1900))
        #expect(s == .pending)
        guard case .flag(let why) = a else { Issue.record("mismatch must flag"); return }
        #expect(why.contains("1900") && why.contains("1990"))
    }

    @Test func paidLeavesOnlyByRefundOrChargeback() {
        #expect(after(.paid, .gatewayReported(.refunded, amountCents: 0)).1 == .refunded)
        #expect(after(.paid, .gatewayReported(.chargeback, amountCents: 0)).1 == .chargeback)
        for g in [GatewayStatus.pending, .paid, .expired, .failed, .unknown, .notFound] {
            #expect(after(.paid, .gatewayReported(g, amountCents: 1990)).1 == .paid)
        }
        // A second paid report never queues a second Purchase.
        guard case .ignore = after(.paid, .gatewayReported(.paid, amountCents: 1990)).0 else { Issue.record("paid twice"); return }
    }

    @Test func terminalStatusesStay() {
        for s in [PaymentStatus.expired, .refunded, .chargeback, .failed] {
            for g in GatewayStatus.allCases { #expect(after(s, .gatewayReported(g, amountCents: 1990)).1 == s) }
            #expect(after(s, .gaveUp).1 == s)
        }
    }

    @Test func pendingMovesForwardOnly() {
        #expect(after(.pending, .gatewayReported(.expired, amountCents: 0)).1 == .expired)
        #expect(after(.pending, .gatewayReported(.failed, amountCents: 0)).1 == .failed)
        #expect(after(.pending, .gatewayReported(.pending, amountCents: 0)).1 == .pending)
        #expect(after(.pending, .gatewayReported(.unknown, amountCents: 0)).1 == .pending)
        #expect(after(.pending, .gatewayReported(.notFound, amountCents: 0)).1 == .pending)
        #expect(after(.pendingVerification, .gatewayReported(.notFound, amountCents: 0)).1 == .pendingVerification)
    }

    @Test func givingUpIsUnresolvedNeverFailed() {
        var m = M(status: .pendingVerification, amountCents: 100)
        guard case .transition(.unresolved, false, let flag?) = m.handle(.gaveUp) else { Issue.record("must be unresolved, flagged"); return }
        #expect(flag.contains("reference") && flag.contains("ResolvePayment"))
        #expect(m.status == .unresolved)
        // Nothing more to give up on, and no create answer moves it.
        #expect(after(.unresolved, .gaveUp).1 == .unresolved)
        #expect(after(.unresolved, .createAnswered(.declined)).1 == .unresolved)
        // The charge turns up later (a webhook with the reference, an operator): it settles.
        #expect(m.handle(.gatewayReported(.paid, amountCents: 100)) == .transition(to: .paid, queuePurchase: true, flag: nil))
        for (g, want) in [(GatewayStatus.pending, PaymentStatus.pending), (.failed, .failed), (.expired, .expired),
                          (.refunded, .refunded), (.chargeback, .chargeback), (.unknown, .unresolved), (.notFound, .unresolved)] {
            #expect(after(.unresolved, .gatewayReported(g, amountCents: 1990)).1 == want, "\(g)")
        }
        guard case .flag(let why) = after(.pending, .gaveUp).0 else { Issue.record("pending gives up by flagging"); return }
        #expect(why.contains("expiry"))
        #expect(after(.pending, .gaveUp).1 == .pending)
    }

    @Test func contradictionsFlagWhateverTheStatus() {
        for s in PaymentStatus.allCases {
            let (a, after) = after(s, .contradicted("other reference"))
            #expect(a == .flag("other reference") && after == s)
        }
    }

    @Test func failedIsNeverReachedWithoutTheGatewaySayingSo() {
        // Every way into `failed`: a declined or not-sent create, or the gateway reporting failed.
        for s in PaymentStatus.allCases {
            for e in [M.Event.gaveUp, .createAnswered(.unknown), .gatewayReported(.unknown, amountCents: 1990),
                      .gatewayReported(.notFound, amountCents: 1990), .contradicted("x")] {
                let to = after(s, e).1
                #expect(to != .failed || s == .failed, "\(s) + \(e) -> failed")
            }
        }
    }

    @Test func protoNumbersRoundTrip() {
        for s in PaymentStatus.allCases { #expect(PaymentStatus(protoNumber: s.protoNumber) == s) }
        #expect(PaymentStatus.unresolved.protoNumber == 8 && PaymentStatus(protoNumber: 9) == nil)
        #expect(PaymentStatus.unresolved.outcomeUnknown && !PaymentStatus.unresolved.isOpen)
    }

    @Test func webhookRetriesBackOff() {
        var c = PaymentConfiguration()
        c.webhookRetryMs = 100
        c.webhookRetryMaxMs = 500
        #expect((1...5).map { c.webhookRetryDelayMs(afterAttempt: $0) } == [100, 200, 400, 500, 500])
    }

    @Test func pendingIsPolledUntilExpiryPlusGrace() {
        var c = PaymentConfiguration()
        c.pendingGraceMs = 1000
        c.pendingLifetimeMs = 60_000
        var p = Payment(id: 1, status: .pending, gateway: "g", botID: 1, telegramUserID: 1, amountCents: 1)
        p.createdAtMs = 5_000
        #expect(c.pollDeadlineMs(p) == 66_000)
        p.expiresAtMs = 20_000
        #expect(c.pollDeadlineMs(p) == 21_000)
    }

    @Test func referencesAndLegacyIDs() {
        #expect(Payment.id(fromReference: "PAY-42") == 42)
        for bad in ["PAY-", "PAY-0", "PAY-042", "pay-42", "PAY-4x", "42"] { #expect(Payment.id(fromReference: bad) == nil) }
        #expect(Payment.isLegacyID("BOT123_1700000000_ab12f"))
        #expect(!Payment.isLegacyID("BOT_1_ab") && !Payment.isLegacyID("PAY-1") && !Payment.isLegacyID("BOT1_x_ab"))
    }

    @Test func backoffGrowsAndCaps() {
        var c = PaymentConfiguration()
        c.reconcileBackoffBaseMs = 100
        c.reconcileBackoffMaxMs = 1000
        #expect((1...6).map { c.backoffMs(afterCheck: $0) } == [100, 200, 400, 800, 1000, 1000])
        #expect(c.backoffMs(afterCheck: 500) == 1000)
    }

    @Test func reaisOnlyAtTheMetaBoundary() {
        #expect(PurchaseEvent.reais(1990) == 19.9)
        #expect(PurchaseEvent.eventID(7) == "purchase_7")
    }
}
