import PluginHost
import Postgres
import RPC
import Testing
@testable import Payments

/// `PaymentService.generatePix` with a scripted gateway and real PostgreSQL (DESIGN §2): what
/// each create outcome does to the row and its history, what is refused before any write, and
/// where the token comes from.
@Suite struct GeneratePixTests {
    typealias H = PaymentHarness

    @Test func createdIsPendingWithTheGatewaysIdsAndTwoHistoryRows() async throws {
        let h = try await H()
        h.gateway.answerCreate(.created("sbx-100", amount: 1990, hash: "hash-100", expiresAtMs: 1_900_000_000_000))
        var input = h.input()
        input.description = "Plano mensal"
        input.customer = GatewayCustomer(name: "Ana", email: "ana@example.com", phone: "+55 11 91234-5678", document: "123.456.789-09")
        let p = try await h.service.generatePix(input)

        #expect(p.status == .pending && p.reference == "PAY-\(p.id)")
        #expect(p.transactionID == "sbx-100" && p.gatewayHash == "hash-100" && p.expiresAtMs == 1_900_000_000_000)
        #expect(p.pixCode.hasPrefix("000201") && p.qrCodeBase64 == "iVBORw0KGgo=")
        // The gateway got the committed row's reference, the exact amount, and our postback URL.
        let sent = try #require(h.gateway.calls.creates.first)
        #expect(h.gateway.calls.creates.count == 1)
        #expect(sent.reference == p.reference && sent.amountCents == 1990 && sent.description == "Plano mensal")
        #expect(sent.customer == input.customer)
        #expect(sent.postbackURL == "https://pay.example.test/webhooks/sandbox/test-secret-0123456789abcdef0123456789")
        let stored = try await h.reload(p.id)
        #expect(stored.status == .pending && stored.transactionID == "sbx-100" && stored.customer == input.customer)
        #expect(try await h.history(p.id) == ["nil->pending_verification (generate)", "pending_verification->pending (generate)"])
        #expect(try await h.count("payment_events") == 2)
        await h.close()
    }

    @Test(arguments: [(CreateOutcome.declined, PaymentStatus.failed), (.notSent, .failed), (.unknown, .pendingVerification)])
    func anOutcomeOtherThanCreatedBindsNothing(outcome: CreateOutcome, expected: PaymentStatus) async throws {
        let h = try await H()
        // Whatever ids a non-CREATED answer carries are not trusted.
        var answer = CreatePixOutcome.created("sbx-should-not-bind", amount: 1990, hash: "h")
        answer.outcome = outcome
        answer.message = "gateway said \(outcome.rawValue)"
        h.gateway.answerCreate(answer)
        let p = try await h.service.generatePix(h.input())

        #expect(p.status == expected)
        let stored = try await h.reload(p.id)
        #expect(stored.status == expected)
        #expect(stored.transactionID.isEmpty && stored.gatewayHash.isEmpty && stored.pixCode.isEmpty && stored.expiresAtMs == 0)
        #expect(stored.gatewayMessage == "gateway said \(outcome.rawValue)")
        #expect(!stored.flagged)
        let history = try await h.history(p.id)
        if expected == .pendingVerification {
            // UNKNOWN changes nothing: the committed row waits for the reconciler.
            #expect(history == ["nil->pending_verification (generate)"])
            #expect(!stored.reconcileDone)
        } else {
            #expect(history == ["nil->pending_verification (generate)", "pending_verification->failed (generate)"])
        }
        await h.close()
    }

    @Test func aHostDecidedOutcomeRecordsWhyTheHostDecided() async throws {
        let h = try await H()
        h.gateway.answerCreate(CreatePixOutcome(outcome: .unknown, message: "ignored", failure: GatewayCallFailure(.timeout, "no answer in 5000 ms")))
        let p = try await h.service.generatePix(h.input())
        #expect(p.status == .pendingVerification)
        #expect(try await h.reload(p.id).gatewayMessage == "timeout: no answer in 5000 ms")
        await h.close()
    }

    @Test func anAccountThePluginRefusesIsNotSentAndFailed() async throws {
        let h = try await H()
        h.gateways.unusable.store(true, ordering: .relaxed)
        let p = try await h.service.generatePix(h.input())
        #expect(p.status == .failed)
        #expect(h.gateway.calls.creates.isEmpty)
        #expect(try await h.reload(p.id).gatewayMessage.hasPrefix("gateway account unusable"))
        await h.close()
    }

    static let invalid: [(String, @Sendable (inout GeneratePixInput) -> Void)] = [
        ("no bot", { $0.botID = 0 }),
        ("no user", { $0.telegramUserID = -1 }),
        ("zero amount", { $0.amountCents = 0 }),
        ("negative amount", { $0.amountCents = -1990 }),
        ("over the ceiling", { $0.amountCents = 50_001 }),
        ("long description", { $0.description = String(repeating: "x", count: 256) }),
        ("long idempotency key", { $0.idempotencyKey = String(repeating: "k", count: 129) }),
        ("e-mail without @", { $0.customer.email = "ana.example.com" }),
        ("e-mail with a space", { $0.customer.email = "ana maria@example.com" }),
        ("document of 10 digits", { $0.customer.document = "1234567890" }),
        ("document with letters", { $0.customer.document = "123456789AB" }),
        ("phone of 9 digits", { $0.customer.phone = "912345678" }),
        ("long name", { $0.customer.name = String(repeating: "n", count: 201) }),
    ]

    @Test func invalidInputIsRefusedBeforeAnyLookupOrWrite() async throws {
        let h = try await H { $0.maxAmountCents = 50_000 }
        for (what, change) in Self.invalid {
            var input = h.input()
            change(&input)
            #expect(await rpcCode { try await h.service.generatePix(input) } == .invalidArgument, "\(what)")
        }
        #expect(try await h.count("payments") == 0)
        #expect(try await h.count("payment_status_history") == 0)
        #expect(try await h.count("payment_events") == 0)
        #expect(h.bots.lookups.load(ordering: .relaxed) == 0 && h.tokens.requests.isEmpty && h.gateway.calls.creates.isEmpty)
        await h.close()
    }

    @Test func amountsUpToTheCeilingAreChargedExactly() async throws {
        let h = try await H { $0.maxAmountCents = 50_000 }
        h.gateway.answerCreate(.created("sbx-1", amount: 1), .created("sbx-2", amount: 50_000))
        let smallest = try await h.service.generatePix(h.input(amount: 1))
        let ceiling = try await h.service.generatePix(h.input(amount: 50_000))
        #expect(h.gateway.calls.creates.map(\.amountCents) == [1, 50_000])
        #expect(try await h.reload(smallest.id).amountCents == 1)
        #expect(try await h.reload(ceiling.id).amountCents == 50_000)
        // Valid customer details in their usual spellings pass.
        var formatted = h.input(amount: 990)
        formatted.customer = GatewayCustomer(name: "Empresa", email: "fin@empresa.com.br", phone: "(11) 3333-4444",
                                             document: "12.345.678/0001-90")
        h.gateway.answerCreate(.created("sbx-3", amount: 990))
        #expect(try await h.service.generatePix(formatted).status == .pending)
        await h.close()
    }

    @Test func anUnusableBotOrGatewayIsRefusedWithoutARow() async throws {
        var disabled = BotGatewayAccount(botID: 8, gateway: "sandbox")
        disabled.enabled = false
        let h = try await H(extraBots: [disabled, BotGatewayAccount(botID: 9, gateway: ""),
                                        BotGatewayAccount(botID: 10, gateway: "not-loaded")])
        func attempt(bot: Int64) async -> RPCCode? {
            var input = h.input()
            input.botID = bot
            return await rpcCode { try await h.service.generatePix(input) }
        }
        #expect(await attempt(bot: 99) == .invalidArgument)       // no such bot
        #expect(await attempt(bot: 8) == .failedPrecondition)     // disabled
        #expect(await attempt(bot: 9) == .failedPrecondition)     // no gateway configured
        #expect(await attempt(bot: 10) == .failedPrecondition)    // plugin not loaded
        h.bots.down.store(true, ordering: .relaxed)
        #expect(await attempt(bot: H.bot) == .unavailable)        // the directory is unreachable
        #expect(try await h.count("payments") == 0)
        #expect(h.tokens.requests.isEmpty && h.gateway.calls.creates.isEmpty)
        await h.close()
    }

    @Test func theTokenIsTheRecoveredOneWithItsClickData() async throws {
        let h = try await H()
        let token = "tok_" + String(repeating: "7", count: 28)
        h.tokens.set(bot: H.bot, user: H.buyer, token: token, source: .fbclidIndex)
        var click = TrackingSnapshot()
        click.fbclid = "IwAR0abc"
        click.utm.source = "facebook"
        click.utm.campaign = "black-friday"
        h.tracking.set(token, click)
        h.gateway.answerCreate(.created("sbx-7", amount: 1990))
        let p = try await h.service.generatePix(h.input())

        #expect(h.tokens.requests == ["\(H.bot)/\(H.buyer)"])
        #expect(h.tracking.lookups == [token])
        let stored = try await h.reload(p.id)
        #expect(stored.trackingToken == token && stored.tokenSource == TokenSource.fbclidIndex.rawValue)
        #expect(stored.fbclid == "IwAR0abc" && stored.utm.source == "facebook" && stored.utm.campaign == "black-friday")
        await h.close()
    }

    @Test func withoutARecoveredTokenThePaymentHasNone() async throws {
        let h = try await H()
        h.gateway.answerCreate(.created("sbx-8", amount: 1990))
        let p = try await h.service.generatePix(h.input())
        let stored = try await h.reload(p.id)
        // No token is made up for it, and there is no click data to look for.
        #expect(stored.trackingToken.isEmpty && stored.tokenSource == TokenSource.none.rawValue && stored.fbclid.isEmpty)
        #expect(h.tokens.requests.count == 1 && h.tracking.lookups.isEmpty)
        await h.close()
    }

    @Test func anIdempotencyKeyReplaysTheFirstPaymentWithoutASecondCharge() async throws {
        let h = try await H()
        h.gateway.answerCreate(.created("sbx-9", amount: 1990))
        var input = h.input()
        input.idempotencyKey = "order-55"
        let first = try await h.service.generatePix(input)
        let again = try await h.service.generatePix(input)
        #expect(again.id == first.id && again.status == .pending && again.transactionID == "sbx-9")
        #expect(h.gateway.calls.creates.count == 1)
        var other = input
        other.amountCents = 2990
        #expect(await rpcCode { try await h.service.generatePix(other) } == .alreadyExists)
        #expect(try await h.count("payments") == 1 && h.gateway.calls.creates.count == 1)
        await h.close()
    }
}
