/// A bot as stored. Secrets are represented only by whether they are set.
public struct Bot: Sendable, Equatable {
    public var id: Int64
    public var telegramUsername: String
    public var metaPixelID: String
    public var hasConversionsAPIToken: Bool
    public var metaTestEventCode: String
    public var gatewayPlugin: String
    public var gatewayBaseURL: String
    public var hasGatewayCredentials: Bool
    public var enabled: Bool
    public var createdAtMs: Int64
    public var updatedAtMs: Int64
    /// Payment events are POSTed here (empty: nowhere), signed with the write-only notify secret.
    public var notifyURL = ""
    public var hasNotifySecret = false
}

/// What `UpsertBot` writes. `nil` secrets keep the stored value; `""` clears the token.
public struct BotInput: Sendable {
    public var id: Int64
    public var telegramUsername: String
    public var metaPixelID = ""
    public var conversionsAPIToken: String?
    public var metaTestEventCode = ""
    public var gatewayPlugin = ""
    public var gatewayBaseURL = ""
    public var gatewayCredentials: [String: String]?
    public var enabled = true
    public var notifyURL = ""
    /// `nil` keeps the stored secret; `""` clears it.
    public var notifySecret: String?

    public init(id: Int64, telegramUsername: String) {
        self.id = id
        self.telegramUsername = telegramUsername
    }
}

public enum SlugMode: String, Sendable, CaseIterable {
    case redirect, page
}

public enum SlugStrategy: String, Sendable, CaseIterable {
    case roundRobin = "round_robin", weighted, priority
}

/// One bot of a slug.
public struct SlugBot: Sendable, Equatable {
    public var botID: Int64
    /// Share under the weighted strategy (0 is read as 1).
    public var weight: Int
    /// Under the priority strategy the lowest number wins.
    public var priority: Int
    public var enabled: Bool

    public init(botID: Int64, weight: Int = 1, priority: Int = 0, enabled: Bool = true) {
        self.botID = botID
        self.weight = weight
        self.priority = priority
        self.enabled = enabled
    }
}

/// A `/go/{slug}` link.
public struct Slug: Sendable, Equatable {
    public var slug: String
    public var mode: SlugMode
    public var strategy: SlugStrategy
    public var bots: [SlugBot]
    public var enabled: Bool
    public var createdAtMs: Int64 = 0
    public var updatedAtMs: Int64 = 0

    public init(slug: String, mode: SlugMode = .redirect, strategy: SlugStrategy = .roundRobin, bots: [SlugBot], enabled: Bool = true) {
        self.slug = slug
        self.mode = mode
        self.strategy = strategy
        self.bots = bots
        self.enabled = enabled
    }

    /// Lowercase letters, digits, `-` and `_`, 1–64 characters, starting with a letter or digit.
    public static func isValidName(_ s: String) -> Bool {
        let u = s.utf8
        func ok(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F }
        guard let first = u.first, (1...64).contains(u.count) else { return false }
        return first != 0x2D && first != 0x5F && u.allSatisfy(ok)
    }
}

/// What `/go/{slug}` needs about one candidate bot (enabled bot, enabled entry).
public struct RouteBot: Sendable, Equatable {
    public var botID: Int64
    public var telegramUsername: String
    public var metaPixelID: String
    public var hasConversionsAPIToken: Bool
    public var metaTestEventCode: String
    public var weight: Int
    public var priority: Int
}

/// A resolved slug: its mode, strategy and the bots a click may go to (possibly none).
public struct SlugRoute: Sendable, Equatable {
    public var slug: String
    public var mode: SlugMode
    public var strategy: SlugStrategy
    public var candidates: [RouteBot]
}
