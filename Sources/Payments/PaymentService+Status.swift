import PluginHost
import Postgres
import RPC

extension PaymentService {
    /// Asks the gateway's status API about `payment` and applies the answer under the row lock.
    /// `hintTransactionID` (from a webhook) is used only when the payment has none yet, and is
    /// stored only when the gateway confirms the charge exists.
    /// - Returns: nil when nothing could be asked (no account, no id and no lookup by reference).
    public func confirm(_ payment: Payment, source: String, hintTransactionID: String = "") async throws -> Applied? {
        guard let account = try await bots.account(botID: payment.botID), account.gateway == payment.gateway else {
            logger.warning("payment_check_no_account", ("payment", payment.reference), ("bot", String(payment.botID)))
            return nil
        }
        let instance: GatewayInstance
        do {
            instance = try await gateways.instance(for: account)
        } catch {
            logger.warning("payment_check_no_instance", ("payment", payment.reference), ("error", String(describing: error)))
            return nil
        }
        let txid = payment.transactionID.isEmpty ? hintTransactionID : payment.transactionID
        if txid.isEmpty && payment.gatewayHash.isEmpty && !instance.plugin.supportsStatusByReference { return nil }
        let status = await instance.getStatus(StatusQuery(transactionID: txid, reference: payment.reference,
                                                          gatewayHash: payment.gatewayHash))
        metrics.increment("pixtrack_gateway_status_checks_total", help: "Gateway status API calls, by gateway and answer.",
                          labels: [("gateway", payment.gateway), ("status", status.status.rawValue), ("source", source)])
        var facts = GatewayFacts()
        if status.status != .unknown && status.status != .notFound {
            facts.transactionID = status.transactionID.isEmpty ? txid : status.transactionID
            facts.paidAtMs = status.paidAtUnixMs
        }
        facts.message = status.failure?.description ?? (status.rawStatus.isEmpty ? status.message : "status \(status.rawStatus)")
        let snapshot: TrackingSnapshot? = status.status == .paid && !payment.trackingToken.isEmpty
            ? await tracking.snapshot(token: payment.trackingToken) : nil
        let event = PaymentMachine.Event.gatewayReported(status.status, amountCents: status.amountCents)
        let detail = "status API said \(status.status.rawValue)\(status.rawStatus.isEmpty ? "" : " (\(status.rawStatus))")"
        let f = facts
        let applied = try await pool.transaction { c in
            try PaymentRepository.apply(event, to: payment.id, facts: f, source: source, detail: detail, purchase: { paid in
                try PurchaseEvent.enqueue(paid, account: account, tracking: snapshot, on: c)
            }, on: c)
        }
        if let a = applied {
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
        }
        return applied
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

    /// The reconciler gave up on `id`: apply `.gaveUp` (pending_verification → failed, flagged;
    /// pending → flagged).
    func giveUp(id: Int64, checks: Int) async throws -> Applied? {
        try await pool.transaction { c in
            try PaymentRepository.apply(.gaveUp, to: id, facts: GatewayFacts(), source: "reconciler",
                                        detail: "no answer after \(checks) checks", purchase: { _ in false }, on: c)
        }
    }
}
