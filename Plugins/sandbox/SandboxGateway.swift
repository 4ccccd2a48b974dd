import Glibc
import PluginKit
import Synchronization

@_cdecl("pixtrack_gateway_entry")
public func pixtrackGatewayEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    PluginExport.entry(SandboxGateway.self, host: host)
}

/// A gateway with no network, for the demo, tests and benchmarks. It issues valid BR Codes
/// (correct CRC), keeps its charges in memory (process-wide, shared by its instances), confirms
/// payment on request, and misbehaves on purpose when told to.
///
/// Behaviour of `create_pix` is chosen by the option `behavior` (every call) or, when that is
/// `normal`, by the amount's last two digits (centavos):
///
/// | behavior      | cents | what happens                                                     |
/// |---------------|-------|------------------------------------------------------------------|
/// | `normal`      |       | CREATED, status `pending` (or `paid` after `auto_pay_ms`)         |
/// | `decline`     | `91`  | DECLINED, nothing recorded                                       |
/// | `timeout`     | `92`  | records the charge, then sleeps past the host deadline           |
/// | `garbage`     | `93`  | records the charge, answers bytes that are not a result          |
/// | `lose`        | `94`  | records the charge, answers PT_OK with a NULL result             |
/// | `not_sent`    | `95`  | NOT_SENT, nothing recorded                                       |
/// | `huge`        | `96`  | records the charge, answers a 2 MiB buffer                       |
/// | `bad_pix`     | `97`  | records the charge, CREATED with a pix code whose CRC is wrong   |
///
/// Charges whose answer was lost can be found with `get_status` by reference.
/// Payment is confirmed by a webhook whose body is `{"action": "pay", "transaction_id": "…"}`
/// (or `"reference"`; actions `pay`, `expire`, `fail`, `refund`, `chargeback`): `parse_webhook`
/// applies it and reports the new status, and `get_status` reports it from then on.
final class SandboxGateway: GatewayPlugin {
    static let name = "sandbox"
    static let version = "1.0.0"
    static let summary = "Offline sandbox gateway: valid BR Codes, scripted outcomes, no network"
    static let capabilities: PluginCapabilities = [.statusByReference, .webhooks]

    struct Charge: Sendable {
        var transactionID: String
        var reference: String
        var amountCents: Int64
        var status: PixStatus
        var createdAtMs: Int64
        var paidAtMs: Int64 = 0
    }

    struct Ledger: Sendable {
        var byID: [String: Charge] = [:]
        var idByReference: [String: String] = [:]
        var counter = 0
    }

    /// Shared by every instance in the process, so a webhook or status call through any account
    /// sees the charges made through another.
    static let ledger = Mutex(Ledger())

    let behavior: String
    let autoPayMs: Int64
    let pixKey: String
    let merchant: String
    let city: String

    init(config: PluginConfiguration, host: HostCall) throws(PluginError) {
        behavior = config.options["behavior"].flatMap { $0.isEmpty ? nil : $0.lowercased() } ?? "normal"
        let known = ["normal", "decline", "timeout", "garbage", "lose", "not_sent", "huge", "bad_pix"]
        guard known.contains(behavior) else { throw .config("unknown behavior '\(behavior)' (one of \(known.joined(separator: ", ")))") }
        autoPayMs = try config.intOption("auto_pay_ms", default: 0)
        pixKey = config.options["pix_key"] ?? "sandbox@pixtrack.invalid"
        merchant = config.options["merchant_name"] ?? "PIXTRACK SANDBOX"
        city = config.options["merchant_city"] ?? "SAO PAULO"
    }

    private func mode(for amount: Int64) -> String {
        guard behavior == "normal" else { return behavior }
        switch amount % 100 {
        case 91: return "decline"
        case 92: return "timeout"
        case 93: return "garbage"
        case 94: return "lose"
        case 95: return "not_sent"
        case 96: return "huge"
        case 97: return "bad_pix"
        default: return "normal"
        }
    }

    func createPix(_ r: PixRequest, host: HostCall) throws(PluginError) -> PixResult {
        guard r.amountCents > 0 else { throw .invalidArgument("amount must be positive") }
        guard !r.reference.isEmpty else { throw .invalidArgument("reference is required") }
        let mode = mode(for: r.amountCents)
        switch mode {
        case "decline": return PixResult(.declined, message: "sandbox: declined on request")
        case "not_sent": return PixResult(.notSent, message: "sandbox: simulated connection refused")
        default: break
        }
        let now = host.nowUnixMs
        let charge: Charge = Self.ledger.withLock { l in
            if let id = l.idByReference[r.reference], let existing = l.byID[id] { return existing }
            l.counter += 1
            let id = "sbx\(now)n\(l.counter)"
            let c = Charge(transactionID: id, reference: r.reference, amountCents: r.amountCents, status: .pending, createdAtMs: now)
            l.byID[id] = c
            l.idByReference[r.reference] = id
            return c
        }
        let code = BRCode.build(key: pixKey, amountCents: r.amountCents, name: merchant, city: city, txid: charge.transactionID)
        var result = PixResult(.created)
        result.transactionID = charge.transactionID
        result.pixCode = code
        result.expiresAtUnixMs = now + 3_600_000
        switch mode {
        case "garbage":
            return .garbage(Array("<html>502 Bad Gateway</html>\u{FF}\u{0}garbage".utf8) + [0xFF, 0xFE, 0x00, 0x01])
        case "lose":
            return .nullResult
        case "huge":
            return .huge(2 << 20)
        case "bad_pix":
            result.pixCode = String(code.dropLast(4)) + (code.hasSuffix("0000") ? "FFFF" : "0000")
            return result
        case "timeout":
            // Sleep until well past the host's deadline, then answer (the host has moved on).
            let sleepMs = min(max(host.remainingMs, 0) + 500, 30_000)
            usleep(UInt32(sleepMs * 1000))
            return result
        default:
            return result
        }
    }

    func getStatus(_ r: StatusRequest, host: HostCall) throws(PluginError) -> StatusResult {
        let now = host.nowUnixMs
        let charge: Charge? = Self.ledger.withLock { l in
            let id = r.transactionID.isEmpty ? l.idByReference[r.reference] : r.transactionID
            guard let id, var c = l.byID[id] else { return nil }
            if autoPayMs > 0, c.status == .pending, now - c.createdAtMs >= autoPayMs {
                c.status = .paid
                c.paidAtMs = now
                l.byID[id] = c
            }
            return c
        }
        guard let c = charge else { return StatusResult(.notFound) }
        var s = StatusResult(c.status, rawStatus: "\(c.status)")
        s.amountCents = c.amountCents
        s.transactionID = c.transactionID
        s.paidAtUnixMs = c.paidAtMs
        return s
    }

    func parseWebhook(_ w: WebhookPayload, host: HostCall) throws(PluginError) -> WebhookResult {
        guard let j = try? JSON.parse(w.body), j.object != nil else { throw .invalidArgument("webhook body is not a JSON object") }
        let action = (j["action"]?.text ?? "").lowercased()
        let target: PixStatus
        switch action {
        case "pay": target = .paid
        case "expire": target = .expired
        case "fail": target = .failed
        case "refund": target = .refunded
        case "chargeback": target = .chargeback
        default: throw .invalidArgument("unknown action '\(action)'")
        }
        let now = host.nowUnixMs
        let tid = j["transaction_id"]?.text ?? ""
        let ref = j["reference"]?.text ?? ""
        let charge: Charge? = Self.ledger.withLock { l in
            let id = tid.isEmpty ? l.idByReference[ref] : tid
            guard let id, var c = l.byID[id] else { return nil }
            c.status = target
            if target == .paid { c.paidAtMs = now }
            l.byID[id] = c
            return c
        }
        guard tid.isEmpty == false || ref.isEmpty == false else { throw .invalidArgument("webhook names no charge (transaction_id or reference)") }
        var out = WebhookResult()
        guard let c = charge else {
            // Not in this process's ledger: report what the body claims, as a real gateway's
            // parser would (the host matches nothing, or finds the charge not found).
            out.transactionID = tid
            out.reference = ref
            out.status = target
            out.rawStatus = action
            out.eventID = j["event_id"]?.text ?? "\(tid.isEmpty ? ref : tid):\(action)"
            return out
        }
        out.transactionID = c.transactionID
        out.reference = c.reference
        out.status = c.status
        out.rawStatus = action
        out.amountCents = c.amountCents
        out.eventID = j["event_id"]?.text ?? "\(c.transactionID):\(action)"
        return out
    }
}
