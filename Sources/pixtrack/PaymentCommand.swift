import ArgumentParser
import ProtoCodec
import PixTrackMessages

/// `pixtrack payment …`: operator tasks on payments.
struct PaymentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payment",
        abstract: "Operator tasks on payments.",
        subcommands: [PaymentResolveCommand.self])
}

/// `pixtrack payment resolve PAY-7 --transaction-id X`: PaymentService/ResolvePayment.
struct PaymentResolveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve",
        abstract: "Attach the gateway's id of a charge to a payment whose outcome is unknown.",
        discussion: """
        A payment is `unresolved` when its create answer was lost and the gateway
        cannot be asked by reference: a charge may exist. Find the charge in the
        gateway's dashboard (search for the reference, e.g. PAY-7) and give its id
        here. The server asks the gateway's status API about that id and binds it
        only if the gateway confirms the charge (and, where its answer names one,
        that the reference is this payment's); the payment then takes the gateway's
        status. Also works for a payment still in pending_verification.

        Examples:
          pixtrack payment resolve PAY-7 --transaction-id pdx1042
          pixtrack payment resolve PAY-7 --transaction-id 8d1f0c2e-… --addr 10.0.0.5:50051
        """)

    @Argument(help: "The payment's reference, PAY-{id}.")
    var reference: String

    @Option(name: .long, help: "The gateway's id of the charge, as its dashboard shows it.")
    var transactionId: String

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard reference.hasPrefix("PAY-"), let n = Int64(reference.dropFirst(4)), n > 0 else {
            throw ValidationError("the reference must look like PAY-7")
        }
        guard !transactionId.isEmpty else { throw ValidationError("--transaction-id must not be empty") }
    }

    func run() throws {
        try runReportingFailures {
            var request = Pixtrack_V1_ResolvePaymentRequest()
            request.reference = reference
            request.gatewayTransactionId = transactionId
            let bytes = try connection.call("/pixtrack.v1.PaymentService/ResolvePayment", try request.serializedBytes())
            let reply = try Pixtrack_V1_ResolvePaymentResponse(serializedBytes: bytes)
            let payment = reply.payment
            let status = Self.statusName(payment?.status.rawValue ?? 0)
            let previous = Self.statusName(reply.previousStatus.rawValue)
            print(reply.changed
                  ? "\(reference): \(previous) -> \(status) (gateway transaction \(payment?.gatewayTransactionId ?? transactionId))"
                  : "\(reference) unchanged (\(status)): \(reply.message)")
        }
    }

    static let statusNames = ["unspecified", "pending_verification", "pending", "paid", "failed", "expired", "refunded",
                              "chargeback", "unresolved"]

    static func statusName(_ n: Int32) -> String {
        statusNames.indices.contains(Int(n)) ? statusNames[Int(n)] : "status \(n)"
    }
}
