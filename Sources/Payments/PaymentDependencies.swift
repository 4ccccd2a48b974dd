import PluginHost

/// A bot's gateway account and Meta pixel, as the payments half needs them.
public struct BotGatewayAccount: Sendable, Equatable {
    public var botID: Int64
    public var enabled: Bool
    /// Plugin name; empty when the bot has no gateway.
    public var gateway: String
    public var config: GatewayConfig
    public var metaPixelID: String
    public var metaTestEventCode: String
    /// Where the bot's payment events are POSTed (empty: nowhere), and their HMAC key.
    public var notifyURL = ""
    public var notifySecret = ""

    public init(botID: Int64, enabled: Bool = true, gateway: String, config: GatewayConfig = GatewayConfig(),
                metaPixelID: String = "", metaTestEventCode: String = "") {
        self.botID = botID
        self.enabled = enabled
        self.gateway = gateway
        self.config = config
        self.metaPixelID = metaPixelID
        self.metaTestEventCode = metaTestEventCode
    }
}

/// (1) bot id → its gateway account (the tracking half owns bots).
public protocol BotGatewayDirectory: Sendable {
    /// nil when there is no such bot. Throws when the store is unreachable.
    func account(botID: Int64) async throws -> BotGatewayAccount?
    /// Any enabled account on `gateway`, to parse webhooks with before a payment is matched.
    func anyAccount(gateway: String) async throws -> BotGatewayAccount?
}

/// Where a token came from (`pixtrack.v1.TokenSource` numbers).
public enum TokenSource: Int32, Sendable {
    case botUser = 1, fbclidIndex = 2, lastToken = 3, chat = 4, none = 5
}

/// (2) the token recovery chain of `ResolveToken` (DESIGN §1). Never creates a token; degrades
/// (Redis down → what PostgreSQL has → none) instead of throwing.
public protocol TokenRecovery: Sendable {
    func recover(botID: Int64, telegramUserID: Int64) async -> (token: String, source: TokenSource)
}

/// What a click recorded about the buyer (`tracking:{token}`).
public struct TrackingSnapshot: Sendable, Equatable {
    public var fbp = "", fbc = "", clientIP = "", userAgent = "", eventSourceURL = "", fbclid = ""
    public var utm = UTM()
    public init() {}
}

/// (3) the tracking data of a token; nil when absent or Redis is unreachable.
public protocol TrackingLookup: Sendable {
    func snapshot(token: String) async -> TrackingSnapshot?
}

/// One gateway account as the payment half calls it: a plugin instance (`GatewayInstance`, which
/// decides CREATED / DECLINED / NOT_SENT / UNKNOWN with the plugin) in the server, a scripted
/// double in the unit tests. None of the calls throws: every failure is an outcome.
public protocol PaymentGateway: Sendable {
    var plugin: PluginInfo { get }
    func createPix(_ request: CreatePixRequest) async -> CreatePixOutcome
    func getStatus(_ query: StatusQuery) async -> StatusOutcome
    func parseWebhook(_ webhook: WebhookRequest) async -> WebhookOutcome
}

extension GatewayInstance: PaymentGateway {}

/// Creates and caches one gateway instance per bot account.
public protocol GatewayProvider: Sendable {
    func instance(for account: BotGatewayAccount) async throws -> any PaymentGateway
    /// `PaymentService/ListGateways`.
    var listings: [GatewayListing] { get }
    func plugin(named name: String) -> PluginInfo?
}
