import PluginHost
import Postgres
import RPC

/// Gateway ids a webhook (or an operator) suggests for a payment that may not have them yet.
/// A hint is only ever bound after the gateway's status API confirmed the charge.
public struct GatewayHint: Sendable, Equatable {
    public var transactionID = ""
    public var gatewayHash = ""
    public init(transactionID: String = "", gatewayHash: String = "") {
        self.transactionID = transactionID
        self.gatewayHash = gatewayHash
    }
}

extension PaymentService {
    /// Asks the gateway's status API about `payment` and applies the answer under the row lock.
    /// The payment's own ids win; `hint` ids fill only what the payment lacks, and are stored
    /// only when the gateway confirms the charge exists, its answer does not name another
    /// reference, and no other payment holds that transaction id (otherwise the payment is
    /// flagged and nothing is bound).
    /// - Returns: nil when nothing could be asked (no account, no id and no lookup by reference).
    public func confirm(_ payment: Payment, source: String, hint: GatewayHint = GatewayHint()) async throws -> Applied? {
        guard let account = try await bots.account(botID: payment.botID), account.gateway == payment.gateway else {
            logger.warning("payment_check_no_account", ("payment", payment.reference), ("bot", String(payment.botID)))
            return nil
        }
        let instance: any PaymentGateway
        do {
            instance = try await gateways.instance(for: account)
        } catch {
            logger.warning("payment_check_no_instance", ("payment", payment.reference), ("error", String(describing: error)))
            return nil
        }
        let txid = payment.transactionID.isEmpty ? hint.transactionID : payment.transactionID
        let hash = payment.gatewayHash.isEmpty ? hint.gatewayHash : payment.gatewayHash
        if txid.isEmpty && hash.isEmpty && !instance.plugin.supportsStatusByReference { return nil }
        let status = await instance.getStatus(StatusQuery(transactionID: txid, reference: payment.reference, gatewayHash: hash))
        metrics.increment("pixtrack_gateway_status_checks_total", help: "Gateway status API calls, by gateway and answer.",
                          labels: [("gateway", payment.gateway), ("status", status.status.rawValue), ("source", source)])
        var facts = GatewayFacts()
        let fromHint = payment.transactionID.isEmpty && (!hint.transactionID.isEmpty || !hint.gatewayHash.isEmpty)
        let echoed = Self.referenceContradiction(status, payment) ?? (fromHint ? Self.amountContradiction(status, payment) : nil)
        if status.status != .unknown && status.status != .notFound && echoed == nil {
            facts.transactionID = status.transactionID.isEmpty ? txid : status.transactionID
            facts.gatewayHash = status.gatewayHash.isEmpty ? hash : status.gatewayHash
            facts.paidAtMs = status.paidAtUnixMs
        }
        facts.message = status.failure?.description ?? (status.rawStatus.isEmpty ? status.message : "status \(status.rawStatus)")
        let snapshot: TrackingSnapshot? = status.status == .paid && !payment.trackingToken.isEmpty
            ? await tracking.snapshot(token: payment.trackingToken) : nil
        let detail = "status API said \(status.status.rawValue)\(status.rawStatus.isEmpty ? "" : " (\(status.rawStatus))")"
        let (reported, found) = (status, facts)
        let (applied, contradiction) = try await pool.transaction { c -> (Applied?, String?) in
            var f = found
            var why = echoed
            // A transaction id is unique per gateway: never move it from one payment to another.
            if why == nil, payment.transactionID.isEmpty, !f.transactionID.isEmpty,
               let other = try PaymentRepository.get(gateway: payment.gateway, transactionID: f.transactionID, on: c), other.id != payment.id {
                why = "gateway transaction '\(f.transactionID)' already belongs to \(other.reference); nothing bound"
            }
            var event = PaymentMachine.Event.gatewayReported(reported.status, amountCents: reported.amountCents)
            if let why {
                f = GatewayFacts()
                f.message = found.message
                event = .contradicted(why)
            }
            let a = try PaymentRepository.apply(event, to: payment.id, facts: f, source: source, detail: detail, purchase: { paid in
                try PurchaseEvent.enqueue(paid, account: account, tracking: snapshot, on: c)
            }, on: c)
            return (a, why)
        }
        guard var a = applied else { return nil }
        a.gatewayStatus = contradiction == nil ? status.status : .unknown
        a.gatewayFailure = contradiction ?? status.failure?.description
        if a.changed {
            logger.info("payment_status_changed", ("payment", payment.reference), ("from", a.previous.rawValue),
                        ("to", a.payment.status.rawValue), ("source", source), ("purchase_queued", String(a.purchaseQueued)))
            count("transition", a.payment.status.rawValue)
        }
        if case .flag(let reason) = a.action {
            logger.warning("payment_flagged", ("payment", payment.reference), ("reason", reason))
            count("flagged", source)
        }
        if a.purchaseQueued { count("purchase", "queued") }
        return a
    }

    /// The status answer names a different charge than `payment`: its echoed reference is one of
    /// ours (`PAY-{id}`) but not this payment's. Nil when it agrees or says nothing.
    static func referenceContradiction(_ s: StatusOutcome, _ payment: Payment) -> String? {
        guard !s.reference.isEmpty, s.reference != payment.reference, Payment.id(fromReference: s.reference) != nil else { return nil }
        return "gateway says transaction '\(s.transactionID)' is \(s.reference), not \(payment.reference); nothing bound"
    }

    /// A hinted charge whose amount is not the payment's is another charge: bind nothing.
    static func amountContradiction(_ s: StatusOutcome, _ payment: Payment) -> String? {
        guard s.status != .unknown, s.status != .notFound, s.amountCents != 0, s.amountCents != payment.amountCents else { return nil }
        return "gateway says transaction '\(s.transactionID)' is for \(s.amountCents) centavos, \(payment.reference) is \(payment.amountCents); nothing bound"
    }

    /// `ReconcilePayment`: check now, whatever the schedule says.
    public func reconcile(id: Int64) async throws -> Applied {
        guard let payment = try await get(id: id) else { throw RPCError(.notFound, "no payment \(Payment.reference(id))") }
        do {
            if let applied = try await confirm(payment, source: "reconcile_rpc") { return applied }
        } catch let e as PGError {
            throw e.rpcError
        }
        return Applied(payment: payment, previous: payment.status, action: .ignore("nothing to ask the gateway"),
                       purchaseQueued: false)
    }

    /// `ResolvePayment`: an operator found the charge of `reference` in the gateway's dashboard.
    /// The id is confirmed through the status API like a webhook's hint, and bound only then.
    public func resolve(reference: String, transactionID raw: String) async throws -> Applied {
        guard let id = Payment.id(fromReference: reference) else { throw RPCError(.invalidArgument, "reference must be PAY-{id}") }
        let txid = raw.trimmingSpaces
        guard !txid.isEmpty else { throw RPCError(.invalidArgument, "gateway_transaction_id is required") }
        guard txid.utf8.count <= 256, txid.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            throw RPCError(.invalidArgument, "gateway_transaction_id must be 1-256 printable characters")
        }
        guard let payment = try await get(id: id) else { throw RPCError(.notFound, "no payment \(reference)") }
        guard payment.status.outcomeUnknown else {
            throw RPCError(.failedPrecondition, "\(reference) is \(payment.status.rawValue): only unresolved or pending_verification payments are resolved")
        }
        if !payment.transactionID.isEmpty, payment.transactionID != txid {
            throw RPCError(.failedPrecondition, "\(reference) is already bound to gateway transaction '\(payment.transactionID)'")
        }
        if let other = try await get(gateway: payment.gateway, transactionID: txid), other.id != payment.id {
            throw RPCError(.alreadyExists, "gateway transaction '\(txid)' already belongs to \(other.reference)")
        }
        let applied: Applied?
        do {
            applied = try await confirm(payment, source: "resolve_rpc", hint: GatewayHint(transactionID: txid))
        } catch let e as PGError {
            throw e.rpcError
        }
        guard let a = applied else {
            throw RPCError(.failedPrecondition, "bot \(payment.botID)'s gateway account is not usable; nothing was asked")
        }
        switch a.gatewayStatus {
        case .notFound?:
            throw RPCError(.notFound, "\(payment.gateway) has no charge '\(txid)'; nothing bound")
        case .unknown?, nil:
            if case .flag(let why) = a.action { throw RPCError(.failedPrecondition, why) }
            throw RPCError(.unavailable, "\(payment.gateway) could not be asked (\(a.gatewayFailure ?? "no answer")); nothing bound, retry")
        default:
            count("resolved", a.payment.status.rawValue)
            logger.info("payment_resolved", ("payment", reference), ("from", a.previous.rawValue), ("to", a.payment.status.rawValue))
            return a
        }
    }

    /// The reconciler gave up on `id`: apply `.gaveUp` (pending_verification → unresolved,
    /// flagged; pending → flagged) and stop polling it.
    func giveUp(id: Int64, checks: Int) async throws -> Applied? {
        try await pool.transaction { c in
            try PaymentRepository.apply(.gaveUp, to: id, facts: GatewayFacts(), source: "reconciler",
                                        detail: "no answer after \(checks) checks", purchase: { _ in false }, on: c)
        }
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and line breaks.
    var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
