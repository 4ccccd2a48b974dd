import MetaCAPI
import PluginHost
import Postgres
import RPC

/// What GeneratePix receives (already decoded from `pixtrack.v1.GeneratePixRequest`).
public struct GeneratePixInput: Sendable, Equatable {
    public var botID: Int64
    public var telegramUserID: Int64
    public var amountCents: Int64
    public var description = ""
    public var customer = GatewayCustomer()
    public var idempotencyKey = ""

    public init(botID: Int64, telegramUserID: Int64, amountCents: Int64) {
        self.botID = botID
        self.telegramUserID = telegramUserID
        self.amountCents = amountCents
    }

    /// Identifies "the same request" for idempotency keys.
    var fingerprint: String {
        SHA256Hex.of([String(botID), String(telegramUserID), String(amountCents), description, customer.name,
                      customer.email, customer.phone, customer.document].joined(separator: "\u{1}"))
    }
}

/// The payment half's domain service: GeneratePix, status checks, queries. Transport-free;
/// `PaymentHandlers` adapts it to RPC.
public final class PaymentService: Sendable {
    public let pool: PGPool
    public let configuration: PaymentConfiguration
    let bots: any BotGatewayDirectory
    let tokens: any TokenRecovery
    let tracking: any TrackingLookup
    let gateways: any GatewayProvider
    let logger: Logger
    let metrics: Metrics

    public init(pool: PGPool, configuration: PaymentConfiguration, bots: any BotGatewayDirectory, tokens: any TokenRecovery,
                tracking: any TrackingLookup, gateways: any GatewayProvider, logger: Logger, metrics: Metrics) {
        self.pool = pool
        self.configuration = configuration
        self.bots = bots
        self.tokens = tokens
        self.tracking = tracking
        self.gateways = gateways
        self.logger = logger
        self.metrics = metrics
    }

    // MARK: - GeneratePix

    /// Validate → recover token → INSERT pending_verification and COMMIT → plugin call under
    /// the host timeout → apply the outcome with its history row in one transaction.
    public func generatePix(_ input: GeneratePixInput) async throws -> Payment {
        try validate(input)
        let account: BotGatewayAccount
        do {
            guard let a = try await bots.account(botID: input.botID) else {
                throw RPCError(.invalidArgument, "unknown bot \(input.botID)")
            }
            account = a
        } catch let e as RPCError {
            throw e
        } catch {
            count("generate", "unavailable")
            throw RPCError(.unavailable, "database unavailable", cause: error)
        }
        guard account.enabled else { throw RPCError(.failedPrecondition, "bot \(input.botID) is disabled") }
        guard !account.gateway.isEmpty else { throw RPCError(.failedPrecondition, "bot \(input.botID) has no gateway configured") }
        guard gateways.plugin(named: account.gateway) != nil else {
            throw RPCError(.failedPrecondition, "gateway plugin '\(account.gateway)' is not loaded")
        }

        let (token, source) = await tokens.recover(botID: input.botID, telegramUserID: input.telegramUserID)
        let snapshot = token.isEmpty ? nil : await tracking.snapshot(token: token)
        var draft = Payment(id: 0, status: .pendingVerification, gateway: account.gateway, botID: input.botID,
                            telegramUserID: input.telegramUserID, amountCents: input.amountCents)
        draft.description = input.description
        draft.customer = input.customer
        draft.trackingToken = token
        draft.tokenSource = source.rawValue
        draft.fbclid = snapshot?.fbclid ?? ""
        draft.utm = snapshot?.utm ?? UTM()
        draft.idempotencyKey = input.idempotencyKey
        draft.requestFingerprint = input.fingerprint

        let inserted: (payment: Payment, isNew: Bool)
        do {
            let d = draft
            inserted = try await pool.transaction { try PaymentRepository.insert(d, on: $0) }
        } catch let e as PGError {
            count("generate", "unavailable")
            logger.warning("generate_pix_db_failed", ("bot", String(input.botID)), ("error", e.description))
            throw e.rpcError
        }
        guard inserted.isNew else {
            guard inserted.payment.requestFingerprint == draft.requestFingerprint else {
                throw RPCError(.alreadyExists, "idempotency key '\(input.idempotencyKey)' was used for a different request")
            }
            count("generate", "idempotent_replay")
            return inserted.payment
        }
        let payment = inserted.payment
        let log = logger.with(("payment", payment.reference), ("bot", String(input.botID)), ("gateway", account.gateway))

        let outcome: CreatePixOutcome
        do {
            let instance = try await gateways.instance(for: account)
            outcome = await instance.createPix(CreatePixRequest(
                reference: payment.reference, amountCents: payment.amountCents, description: payment.description,
                customer: payment.customer, postbackURL: configuration.postbackURL(gateway: account.gateway)))
        } catch {
            // No instance: the gateway was never called.
            outcome = CreatePixOutcome(outcome: .notSent, message: "gateway account unusable: \(error)")
        }
        var facts = GatewayFacts()
        facts.transactionID = outcome.outcome == .created ? outcome.transactionID : ""
        facts.gatewayHash = outcome.outcome == .created ? outcome.gatewayHash : ""
        facts.pixCode = outcome.outcome == .created ? outcome.pixCode : ""
        facts.qrCodeBase64 = outcome.outcome == .created ? outcome.qrCodeBase64 : ""
        facts.expiresAtMs = outcome.outcome == .created ? outcome.expiresAtUnixMs : 0
        facts.message = outcome.failure?.description ?? outcome.message
        let detail = "create_pix \(outcome.outcome.rawValue) in \(outcome.elapsedMs) ms"
        count("generate", outcome.outcome.rawValue)
        metrics.observe("pixtrack_gateway_create_seconds", help: "Gateway create_pix latency, by gateway.",
                        labels: [("gateway", account.gateway)], value: Double(outcome.elapsedMs) / 1000)
        do {
            let f = facts, event = PaymentMachine.Event.createAnswered(outcome.outcome)
            let applied = try await pool.transaction { c in
                try PaymentRepository.apply(event, to: payment.id, facts: f, source: "generate", detail: detail,
                                            purchase: { _ in false }, on: c)
            }
            log.info("generate_pix", ("outcome", outcome.outcome.rawValue), ("status", applied?.payment.status.rawValue ?? "?"),
                     ("elapsed_ms", String(outcome.elapsedMs)))
            return applied?.payment ?? payment
        } catch {
            // The row stays pending_verification with its reference; the reconciler settles it.
            count("generate", "outcome_not_recorded")
            log.error("generate_pix_outcome_not_recorded", ("outcome", outcome.outcome.rawValue), ("error", String(describing: error)))
            return payment
        }
    }

    func validate(_ i: GeneratePixInput) throws {
        guard i.botID > 0 else { throw RPCError(.invalidArgument, "bot_id is required") }
        guard i.telegramUserID > 0 else { throw RPCError(.invalidArgument, "telegram_user_id is required") }
        guard i.amountCents > 0 else { throw RPCError(.invalidArgument, "amount_cents must be positive") }
        guard i.amountCents <= configuration.maxAmountCents else {
            throw RPCError(.invalidArgument, "amount_cents exceeds the ceiling of \(configuration.maxAmountCents)")
        }
        guard i.description.count <= 255 else { throw RPCError(.invalidArgument, "description is longer than 255 characters") }
        guard i.idempotencyKey.count <= 128 else { throw RPCError(.invalidArgument, "idempotency_key is longer than 128 characters") }
        let c = i.customer
        if !c.email.isEmpty {
            let parts = c.email.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !c.email.contains(" ") else {
                throw RPCError(.invalidArgument, "customer.email is not an e-mail address")
            }
        }
        if !c.document.isEmpty {
            let digits = c.document.filter(\.isNumber)
            guard digits.count == 11 || digits.count == 14, c.document.allSatisfy({ $0.isNumber || ".-/ ".contains($0) }) else {
                throw RPCError(.invalidArgument, "customer.document must be a CPF (11 digits) or CNPJ (14 digits)")
            }
        }
        if !c.phone.isEmpty {
            let digits = c.phone.filter(\.isNumber)
            guard (10...13).contains(digits.count), c.phone.allSatisfy({ $0.isNumber || "+()- ".contains($0) }) else {
                throw RPCError(.invalidArgument, "customer.phone must hold 10 to 13 digits")
            }
        }
        guard c.name.count <= 200 else { throw RPCError(.invalidArgument, "customer.name is too long") }
    }

    func count(_ what: String, _ result: String) {
        metrics.increment("pixtrack_payments_events_total", help: "Payment operations, by operation and result.",
                          labels: [("operation", what), ("result", result)])
    }
}
