import MetaCAPI
import Postgres
import RPC
import Synchronization
import Testing
@testable import Payments
@testable import PluginHost

// Test doubles for the seams of `PaymentDependencies.swift` that are not our storage: the
// gateway (scripted answers, every call recorded), the tracking half's bots, token recovery
// and click data. The payments' own tables are the real PostgreSQL of `DATABASE_URL`, one
// fresh schema per test (`PaymentRepositoryTests.freshPool`).

/// A gateway account whose answers the test scripts. Unscripted calls answer like a gateway
/// that cannot be reached (`unknown`, with a timeout failure).
final class ScriptedGateway: PaymentGateway {
    let plugin: PluginInfo

    struct Log: Sendable {
        var creates: [CreatePixRequest] = []
        var statusQueries: [StatusQuery] = []
        var webhooks: [WebhookRequest] = []
    }

    private let script = Mutex<(create: [CreatePixOutcome], status: [StatusOutcome], webhook: [WebhookOutcome])>(([], [], []))
    private let log = Mutex(Log())

    init(name: String = "sandbox", statusByReference: Bool = true) {
        plugin = PluginInfo(name: name, version: "0.0.1", description: "scripted test gateway", abiMajor: 1, abiMinor: 0,
                            path: "/nonexistent/lib\(name).so", sha256: "", capabilities: statusByReference ? 3 : 2)
    }

    /// The next answers, in order, replacing what was left; the last one repeats.
    func answerCreate(_ outcomes: CreatePixOutcome...) { script.withLock { $0.create = outcomes } }
    func answerStatus(_ outcomes: StatusOutcome...) { script.withLock { $0.status = outcomes } }
    func answerWebhook(_ outcomes: WebhookOutcome...) { script.withLock { $0.webhook = outcomes } }

    var calls: Log { log.withLock { $0 } }

    func createPix(_ request: CreatePixRequest) async -> CreatePixOutcome {
        log.withLock { $0.creates.append(request) }
        return script.withLock { Self.next(&$0.create) }
            ?? CreatePixOutcome(outcome: .unknown, failure: GatewayCallFailure(.timeout, "no create answer scripted"))
    }

    func getStatus(_ query: StatusQuery) async -> StatusOutcome {
        log.withLock { $0.statusQueries.append(query) }
        return script.withLock { Self.next(&$0.status) }
            ?? StatusOutcome(status: .unknown, failure: GatewayCallFailure(.timeout, "no status answer scripted"))
    }

    func parseWebhook(_ webhook: WebhookRequest) async -> WebhookOutcome {
        log.withLock { $0.webhooks.append(webhook) }
        if let o = script.withLock({ Self.next(&$0.webhook) }) { return o }
        var failed = WebhookOutcome()
        failed.failure = GatewayCallFailure(.timeout, "no webhook answer scripted")
        return failed
    }

    private static func next<T>(_ queue: inout [T]) -> T? {
        guard let first = queue.first else { return nil }
        if queue.count > 1 { queue.removeFirst() }
        return first
    }
}

/// `GatewayProvider` over scripted gateways, by plugin name.
final class ScriptedGateways: GatewayProvider {
    private let gateways: [String: ScriptedGateway]
    /// When set, `instance(for:)` fails like an account the plugin refuses.
    let unusable = Atomic<Bool>(false)
    let instancesMade = Atomic<Int>(0)

    init(_ gateways: [ScriptedGateway]) {
        self.gateways = Dictionary(uniqueKeysWithValues: gateways.map { ($0.plugin.name, $0) })
    }

    func instance(for account: BotGatewayAccount) async throws -> any PaymentGateway {
        guard !unusable.load(ordering: .relaxed), let g = gateways[account.gateway] else {
            throw GatewayInstanceError(gateway: account.gateway, message: "account refused by the plugin")
        }
        instancesMade.wrappingAdd(1, ordering: .relaxed)
        return g
    }

    var listings: [GatewayListing] { [] }

    func plugin(named name: String) -> PluginInfo? { gateways[name]?.plugin }
}

/// The tracking half's bots, as the payments half sees them through `BotGatewayDirectory`.
final class TestBots: BotGatewayDirectory {
    struct Unreachable: Error {}
    private let accounts: Mutex<[Int64: BotGatewayAccount]>
    let down = Atomic<Bool>(false)
    let lookups = Atomic<Int>(0)

    init(_ accounts: [BotGatewayAccount]) {
        self.accounts = Mutex(Dictionary(uniqueKeysWithValues: accounts.map { ($0.botID, $0) }))
    }

    func account(botID: Int64) async throws -> BotGatewayAccount? {
        lookups.wrappingAdd(1, ordering: .relaxed)
        if down.load(ordering: .relaxed) { throw Unreachable() }
        return accounts.withLock { $0[botID] }
    }

    func anyAccount(gateway: String) async throws -> BotGatewayAccount? {
        if down.load(ordering: .relaxed) { throw Unreachable() }
        return accounts.withLock { $0.values.filter { $0.gateway == gateway && $0.enabled }.min { $0.botID < $1.botID } }
    }
}

/// The token recovery chain: a scripted answer per (bot, user), every request recorded.
final class TestTokens: TokenRecovery {
    private let answers = Mutex<[String: (String, TokenSource)]>([:])
    private let asked = Mutex<[String]>([])

    func set(bot: Int64, user: Int64, token: String, source: TokenSource) {
        answers.withLock { $0["\(bot)/\(user)"] = (token, source) }
    }

    var requests: [String] { asked.withLock { $0 } }

    func recover(botID: Int64, telegramUserID: Int64) async -> (token: String, source: TokenSource) {
        let key = "\(botID)/\(telegramUserID)"
        asked.withLock { $0.append(key) }
        return answers.withLock { $0[key] } ?? ("", .none)
    }
}

/// Click data by token, every lookup recorded.
final class TestTracking: TrackingLookup {
    private let snapshots = Mutex<[String: TrackingSnapshot]>([:])
    private let asked = Mutex<[String]>([])

    func set(_ token: String, _ s: TrackingSnapshot) { snapshots.withLock { $0[token] = s } }
    var lookups: [String] { asked.withLock { $0 } }

    func snapshot(token: String) async -> TrackingSnapshot? {
        asked.withLock { $0.append(token) }
        return snapshots.withLock { $0[token] }
    }
}

/// A `PaymentService` on a fresh schema with the doubles above: bot 7 on the `sandbox` gateway.
struct PaymentHarness {
    static let bot: Int64 = 7
    static let buyer: Int64 = 424_242

    let pool: PGPool
    let service: PaymentService
    let gateway: ScriptedGateway
    let gateways: ScriptedGateways
    let bots: TestBots
    let tokens = TestTokens()
    let tracking = TestTracking()

    init(extraBots: [BotGatewayAccount] = [], gateway: ScriptedGateway = ScriptedGateway(),
         configure: (inout PaymentConfiguration) -> Void = { _ in }) async throws {
        pool = try await PaymentRepositoryTests.freshPool()
        var cfg = PaymentConfiguration()
        cfg.webhookSecrets = ["sandbox": "test-secret-0123456789abcdef0123456789"]
        cfg.publicBaseURL = "https://pay.example.test"
        configure(&cfg)
        self.gateway = gateway
        gateways = ScriptedGateways([gateway])
        bots = TestBots([BotGatewayAccount(botID: Self.bot, gateway: gateway.plugin.name, metaPixelID: "112233445566778")] + extraBots)
        service = PaymentService(pool: pool, configuration: cfg, bots: bots, tokens: tokens, tracking: tracking,
                                 gateways: gateways, logger: Logger(minimum: .error), metrics: Metrics())
    }

    func input(amount: Int64 = 1990) -> GeneratePixInput {
        GeneratePixInput(botID: Self.bot, telegramUserID: Self.buyer, amountCents: amount)
    }

    /// A payment committed as GeneratePix commits it, then moved by `events` (with `facts` on
    /// the first), straight through the repository.
    func payment(amount: Int64 = 1990, gateway: String = "sandbox", facts: GatewayFacts = GatewayFacts(),
                 _ events: PaymentMachine.Event...) async throws -> Payment {
        var draft = Payment(id: 0, status: .pendingVerification, gateway: gateway, botID: Self.bot,
                            telegramUserID: Self.buyer, amountCents: amount)
        draft.requestFingerprint = "fp"
        let d = draft
        var p = try await pool.transaction { try PaymentRepository.insert(d, on: $0) }.payment
        var f = facts
        for e in events {
            let (id, ff) = (p.id, f)
            p = try await pool.transaction { c in
                try PaymentRepository.apply(e, to: id, facts: ff, source: "test", detail: "", purchase: { _ in false }, on: c)
            }?.payment ?? p
            f = GatewayFacts()
        }
        return p
    }

    func reload(_ id: Int64) async throws -> Payment {
        try #require(try await service.get(id: id))
    }

    /// `from → to (source)` of every history row of `id`, oldest first.
    func history(_ id: Int64) async throws -> [String] {
        try await pool.withConnection { c in
            try c.query("SELECT from_status, to_status, source FROM payment_status_history WHERE payment_id = $1 ORDER BY id",
                        [.int(id)]).map { "\(try $0.string("from_status") ?? "nil")->\(try $0.string("to_status") ?? "") (\(try $0.string("source") ?? ""))" }
        }
    }

    func count(_ table: String) async throws -> Int {
        try await pool.withConnection { try $0.query("SELECT count(*) AS n FROM \(table)").first?.int("n") ?? -1 }
    }

    /// Seconds from the database's `now()` to `column` of row `id` in `table`.
    func secondsUntil(_ column: String, of table: String, id: Int64) async throws -> Double {
        try await pool.withConnection { c in
            try c.query("SELECT extract(epoch FROM \(column) - now())::float8 AS s FROM \(table) WHERE id = $1", [.int(id)])
                .first?.double("s") ?? .nan
        }
    }

    /// Moves a row's schedule to now: what waiting out its delay would do.
    func makeDue(_ column: String, of table: String, id: Int64) async throws {
        try await pool.withConnection { try $0.execute("UPDATE \(table) SET \(column) = now() WHERE id = $1", [.int(id)]) }
    }

    func close() async { await pool.close() }
}

extension CreatePixOutcome {
    /// A CREATED answer with a valid BR Code for `amount`.
    static func created(_ txid: String, amount: Int64, hash: String = "", expiresAtMs: Int64 = 0) -> CreatePixOutcome {
        var o = CreatePixOutcome(outcome: .created, message: "created")
        o.transactionID = txid
        o.gatewayHash = hash
        o.pixCode = "00020126330014br.gov.bcb.pix0111\(txid)520400005303986540\(amount)5802BR"
        o.qrCodeBase64 = "iVBORw0KGgo="
        o.expiresAtUnixMs = expiresAtMs
        return o
    }
}

extension StatusOutcome {
    static func answered(_ status: GatewayStatus, txid: String = "", amount: Int64 = 0, reference: String = "",
                         hash: String = "") -> StatusOutcome {
        var s = StatusOutcome(status: status)
        s.transactionID = txid
        s.amountCents = amount
        s.reference = reference
        s.gatewayHash = hash
        s.rawStatus = status.rawValue.uppercased()
        return s
    }

    /// The gateway could not be asked.
    static var unreachable: StatusOutcome {
        StatusOutcome(status: .unknown, failure: GatewayCallFailure(.timeout, "plugin did not answer within 5000 ms"))
    }
}

extension WebhookOutcome {
    static func hint(txid: String = "", hash: String = "", reference: String = "", status: GatewayStatus = .paid,
                     amount: Int64 = 0) -> WebhookOutcome {
        var w = WebhookOutcome()
        w.transactionID = txid
        w.gatewayHash = hash
        w.reference = reference
        w.status = status
        w.amountCents = amount
        return w
    }
}

/// The `RPCError` code `body` threw, nil when it returned.
func rpcCode<T>(_ body: () async throws -> T) async -> RPCCode? {
    do {
        _ = try await body()
        return nil
    } catch let e as RPCError {
        return e.code
    } catch {
        return .unknown
    }
}
