import PluginHost

/// A payment's status (DESIGN §2). The raw value is what the `payments.status` column holds.
public enum PaymentStatus: String, Sendable, CaseIterable {
    /// Row committed, gateway outcome not known yet.
    case pendingVerification = "pending_verification"
    /// PIX issued, waiting for the buyer.
    case pending
    /// Confirmed by the gateway's status API.
    case paid
    /// The gateway told us it did not create the charge (declined, failed), or the request
    /// certainly never left. Never inferred from silence.
    case failed
    case expired
    case refunded
    case chargeback
    /// The outcome was never learned and the gateway could not tell us: a charge may exist.
    /// Flagged for an operator (`ResolvePayment`); a webhook or a status answer still settles it.
    case unresolved

    /// `pixtrack.v1.PaymentStatus` number.
    public var protoNumber: Int32 {
        switch self {
        case .pendingVerification: 1
        case .pending: 2
        case .paid: 3
        case .failed: 4
        case .expired: 5
        case .refunded: 6
        case .chargeback: 7
        case .unresolved: 8
        }
    }

    public init?(protoNumber: Int32) {
        guard let s = Self.allCases.first(where: { $0.protoNumber == protoNumber }) else { return nil }
        self = s
    }

    /// Statuses the reconciler still polls.
    public var isOpen: Bool { self == .pendingVerification || self == .pending }

    /// Statuses whose gateway outcome is not known: a webhook's ids may still be bound to them,
    /// and an operator may resolve them.
    public var outcomeUnknown: Bool { self == .pendingVerification || self == .unresolved }
}

/// The payment status machine as a value: feed it an event, get the action to perform.
/// No I/O here; the repository applies the action under the row lock.
///
/// Legal transitions (everything else is `.ignore`, transitions only move forward):
/// - `pendingVerification` → `pending` (created / gateway says pending), `failed` (declined,
///   not sent, gateway says failed), `paid`, `expired`, `refunded`, `chargeback`
///   (gateway-confirmed), `unresolved` (the reconciler's last check learned nothing: flagged).
/// - `unresolved` → everything `pendingVerification` may reach from a gateway answer (a webhook,
///   a status answer, or an operator's `ResolvePayment`); the flag is cleared when it moves.
/// - `pending` → `paid`, `failed`, `expired`, `refunded`, `chargeback` (gateway-confirmed).
/// - `paid` → `refunded`, `chargeback` only.
/// - `failed`, `expired`, `refunded`, `chargeback`: terminal.
/// A `paid` report whose amount differs from the payment's flags it and changes nothing.
public struct PaymentMachine: Sendable, Equatable {
    public private(set) var status: PaymentStatus
    public let amountCents: Int64

    public enum Event: Sendable, Equatable {
        /// The answer to our own create call.
        case createAnswered(CreateOutcome)
        /// What the gateway's status API said (a webhook is only a hint until this arrives).
        case gatewayReported(GatewayStatus, amountCents: Int64)
        /// The reconciler made its last check without learning anything.
        case gaveUp
        /// The gateway's answer contradicts what we hold (another reference, a transaction id
        /// that belongs to another payment): flag, bind nothing.
        case contradicted(String)
    }

    public enum Action: Sendable, Equatable {
        /// Move to `status`; `queuePurchase` when this is the first transition to `paid`.
        case transition(to: PaymentStatus, queuePurchase: Bool, flag: String?)
        /// Keep the status, flag the payment for review.
        case flag(String)
        /// Nothing changes; why.
        case ignore(String)
    }

    /// Why an `unresolved` payment is flagged.
    public static let unresolvedReason =
        "outcome unknown after every check: the gateway may hold a charge; look it up by reference and attach it with ResolvePayment"

    public init(status: PaymentStatus, amountCents: Int64) {
        self.status = status
        self.amountCents = amountCents
    }

    public mutating func handle(_ event: Event) -> Action {
        let action = decide(event)
        if case .transition(let to, _, _) = action { status = to }
        return action
    }

    private func decide(_ event: Event) -> Action {
        switch (status, event) {
        case (.pendingVerification, .createAnswered(let outcome)):
            switch outcome {
            case .created: return move(.pending)
            case .declined, .notSent: return move(.failed)
            case .unknown: return .ignore("gateway outcome unknown; the reconciler will ask")
            }
        case (_, .createAnswered):
            return .ignore("create answer arrived after the status moved to \(status.rawValue)")

        case (.pendingVerification, .gatewayReported(let s, let amount)), (.unresolved, .gatewayReported(let s, let amount)):
            return fromOpen(s, amount, allowPending: true)
        case (.pending, .gatewayReported(let s, let amount)):
            return fromOpen(s, amount, allowPending: false)
        case (.paid, .gatewayReported(let s, _)):
            switch s {
            case .refunded: return move(.refunded)
            case .chargeback: return move(.chargeback)
            default: return .ignore("paid leaves only by refund or chargeback")
            }
        case (_, .gatewayReported):
            return .ignore("\(status.rawValue) is terminal")

        case (.pendingVerification, .gaveUp):
            return .transition(to: .unresolved, queuePurchase: false, flag: Self.unresolvedReason)
        case (.pending, .gaveUp):
            return .flag("still pending at the gateway after the PIX expiry and every check")
        case (_, .gaveUp):
            return .ignore("\(status.rawValue) needs no more checks")

        case (_, .contradicted(let why)):
            return .flag(why)
        }
    }

    private func fromOpen(_ reported: GatewayStatus, _ amount: Int64, allowPending: Bool) -> Action {
        switch reported {
        case .pending:
            return allowPending ? move(.pending) : .ignore("still pending")
        case .paid:
            if amount != amountCents {
                return .flag("gateway reports paid \(amount) centavos, payment is \(amountCents)")
            }
            return .transition(to: .paid, queuePurchase: true, flag: nil)
        case .failed: return move(.failed)
        case .expired: return move(.expired)
        case .refunded: return move(.refunded)
        case .chargeback: return move(.chargeback)
        case .unknown: return .ignore("gateway status unknown")
        case .notFound: return .ignore("gateway does not know the charge (yet)")
        }
    }

    private func move(_ to: PaymentStatus) -> Action {
        .transition(to: to, queuePurchase: false, flag: nil)
    }
}
