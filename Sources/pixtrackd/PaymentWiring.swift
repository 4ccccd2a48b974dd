import Foundation
import JSONKit
import MetaCAPI
import Payments
import PluginHost
import Postgres
import RPC
import Secrets
import Tracking
import WebRoutes

/// The payments half: gateway plugins, PaymentService, the webhook route, the reconciler and
/// webhook processor, configured from `PIXTRACK_*` variables.
struct PaymentWiring {
    let service: PaymentService
    let handlers: PaymentHandlers
    /// Nil when `PIXTRACK_PAYMENT_WORKERS=0` (an instance that serves calls only).
    let workers: PaymentWorkers?
    /// The event log as this instance follows it (LISTEN wake-ups), and its watches.
    let hub: PaymentEventHub
    let listener: PGListener
    let watchers: PaymentWatchers
    /// Nil with `PIXTRACK_PAYMENT_WORKERS=0`.
    let notifications: NotificationSender?

    static let environmentHelp = """
      PIXTRACK_PLUGIN_DIR             gateway plugins (*.so); default: the folder of the pixtrackd binary
      PIXTRACK_GATEWAY_TIMEOUT_MS     host timeout of every gateway call (default 5000)
      PIXTRACK_PLUGIN_MAX_IN_FLIGHT   per plugin: calls running at once, overrunning ones included; more fail fast
                                      as busy, and no plugin's trouble takes another's quota (default 64)
      PIXTRACK_MAX_AMOUNT_CENTS       GeneratePix ceiling in centavos (default 10000000)
      PIXTRACK_WEBHOOK_SECRETS        secret path segment per gateway (32+ characters), e.g. paradise:9f2c…,sandbox:4be7…
      PIXTRACK_WEBHOOK_BASE_URL       public origin gateways post to (default PIXTRACK_PUBLIC_BASE_URL)
      PIXTRACK_RECONCILE_INTERVAL_MS / _BACKOFF_MS / _MAX_BACKOFF_MS / _MAX_CHECKS / _BATCH
                                      reconciler tuning (defaults 5000 / 30000 / 3600000 / 12 / 50)
      PIXTRACK_RECONCILE_PENDING_GRACE_MS / _PENDING_LIFETIME_MS
                                      a pending PIX is polled until its expiry + grace (default 3600000);
                                      without an expiry, lifetime after creation stands in (default 86400000)
      PIXTRACK_WEBHOOK_POLL_MS / _MAX_ATTEMPTS / _RETRY_MS / _MAX_RETRY_MS
                                      webhook processor tuning (defaults 1000 / 5 / 10000 / 3600000;
                                      the retry delay doubles per attempt up to the max)
      PIXTRACK_PAYMENT_WORKERS=0      do not run the reconciler, webhook processor and notification sender here
      PIXTRACK_WATCH_MAX / _MAX_PER_CONNECTION
                                      open WatchPayments streams in this process / per connection (defaults 10000 / 16)
      PIXTRACK_WATCH_HEARTBEAT_MS     an idle watch gets a heartbeat event this often (default 15000)
      PIXTRACK_WATCH_STALL_MS         a watcher that reads nothing this long is cut off, RESOURCE_EXHAUSTED (default 10000)
      PIXTRACK_NOTIFY_RETRY_MS / _MAX_RETRY_MS
                                      notification retry delay, doubling per attempt up to the max (defaults 5000 / 3600000)
      PIXTRACK_NOTIFY_MAX_AGE_MS / _MAX_ATTEMPTS
                                      retries stop, parked, this long after the event or after this many attempts
                                      (defaults 259200000 = 3 days / 200)
      PIXTRACK_NOTIFY_TIMEOUT_MS / _POLL_MS
                                      one notification POST / the sender's idle poll (defaults 10000 / 1000)
    """

    static func configuration(_ env: [String: String]) throws(ServerOptions.UsageError) -> PaymentConfiguration {
        var c = PaymentConfiguration()
        c.gatewayTimeoutMs = Int64(try EnvNumber.int(env, "PIXTRACK_GATEWAY_TIMEOUT_MS", 5000, 50...120_000))
        c.maxAmountCents = Int64(try EnvNumber.int(env, "PIXTRACK_MAX_AMOUNT_CENTS", 10_000_000, 1...Int(Int32.max)))
        for item in (env["PIXTRACK_WEBHOOK_SECRETS"] ?? "").split(separator: ",") {
            let kv = item.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty,
                  kv[1].utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "%") }) else {
                throw .init(message: "PIXTRACK_WEBHOOK_SECRETS must look like gateway:secret,gateway:secret (URL-safe characters, no / or %)")
            }
            // The secret is the only thing standing between the internet and our inbox (the
            // gateways do not sign their webhooks): it must not be guessable.
            guard kv[1].count >= 32 else {
                throw .init(message: "PIXTRACK_WEBHOOK_SECRETS: the secret for '\(kv[0])' has \(kv[1].count) characters; use at least 32 (e.g. openssl rand -hex 16)")
            }
            c.webhookSecrets[kv[0]] = kv[1]
        }
        var base = env["PIXTRACK_WEBHOOK_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? env["PIXTRACK_PUBLIC_BASE_URL"] ?? ""
        while base.hasSuffix("/") { base.removeLast() }
        c.publicBaseURL = base
        c.reconcileIntervalMs = Int64(try EnvNumber.int(env, "PIXTRACK_RECONCILE_INTERVAL_MS", 5000, 10...3_600_000))
        c.reconcileBackoffBaseMs = Int64(try EnvNumber.int(env, "PIXTRACK_RECONCILE_BACKOFF_MS", 30_000, 1...86_400_000))
        c.reconcileBackoffMaxMs = Int64(try EnvNumber.int(env, "PIXTRACK_RECONCILE_MAX_BACKOFF_MS", 3_600_000, 1...86_400_000))
        c.reconcileMaxChecks = try EnvNumber.int(env, "PIXTRACK_RECONCILE_MAX_CHECKS", 12, 1...1000)
        c.reconcileBatch = try EnvNumber.int(env, "PIXTRACK_RECONCILE_BATCH", 50, 1...1000)
        c.webhookIntervalMs = Int64(try EnvNumber.int(env, "PIXTRACK_WEBHOOK_POLL_MS", 1000, 10...3_600_000))
        c.webhookMaxAttempts = try EnvNumber.int(env, "PIXTRACK_WEBHOOK_MAX_ATTEMPTS", 5, 1...1000)
        c.webhookRetryMs = Int64(try EnvNumber.int(env, "PIXTRACK_WEBHOOK_RETRY_MS", 10_000, 10...86_400_000))
        c.webhookRetryMaxMs = Int64(try EnvNumber.int(env, "PIXTRACK_WEBHOOK_MAX_RETRY_MS", 3_600_000, 10...86_400_000))
        c.pendingGraceMs = Int64(try EnvNumber.int(env, "PIXTRACK_RECONCILE_PENDING_GRACE_MS", 3_600_000, 0...30 * 86_400_000))
        c.pendingLifetimeMs = Int64(try EnvNumber.int(env, "PIXTRACK_RECONCILE_PENDING_LIFETIME_MS", 86_400_000, 1000...30 * 86_400_000))
        return c
    }

    static func watchConfiguration(_ env: [String: String]) throws(ServerOptions.UsageError) -> PaymentWatchConfiguration {
        var w = PaymentWatchConfiguration()
        w.maxWatches = try EnvNumber.int(env, "PIXTRACK_WATCH_MAX", 10_000, 1...1_000_000)
        w.maxPerConnection = try EnvNumber.int(env, "PIXTRACK_WATCH_MAX_PER_CONNECTION", 16, 1...10_000)
        w.heartbeat = .milliseconds(try EnvNumber.int(env, "PIXTRACK_WATCH_HEARTBEAT_MS", 15_000, 100...3_600_000))
        w.stallTimeout = .milliseconds(try EnvNumber.int(env, "PIXTRACK_WATCH_STALL_MS", 10_000, 100...3_600_000))
        return w
    }

    static func notificationConfiguration(_ env: [String: String]) throws(ServerOptions.UsageError) -> NotificationConfiguration {
        var n = NotificationConfiguration()
        n.retryMs = Int64(try EnvNumber.int(env, "PIXTRACK_NOTIFY_RETRY_MS", 5_000, 10...86_400_000))
        n.retryMaxMs = Int64(try EnvNumber.int(env, "PIXTRACK_NOTIFY_MAX_RETRY_MS", 3_600_000, 10...86_400_000))
        n.maxAgeMs = Int64(try EnvNumber.int(env, "PIXTRACK_NOTIFY_MAX_AGE_MS", 3 * 86_400_000, 1000...30 * 86_400_000))
        n.maxAttempts = try EnvNumber.int(env, "PIXTRACK_NOTIFY_MAX_ATTEMPTS", 200, 1...100_000)
        n.timeoutMs = try EnvNumber.int(env, "PIXTRACK_NOTIFY_TIMEOUT_MS", 10_000, 100...120_000)
        n.pollInterval = .milliseconds(try EnvNumber.int(env, "PIXTRACK_NOTIFY_POLL_MS", 1000, 10...3_600_000))
        return n
    }

    init(storage: Storage, tracking: TrackingService, environment env: [String: String], metrics: Metrics,
         logger: Logger, secrets: SecretKeyring?) async throws {
        let configuration = try Self.configuration(env)
        let pluginDir = env["PIXTRACK_PLUGIN_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        var options: GatewayRegistry.Options
        do {
            options = try GatewayRegistry.Options.fromEnvironment(env.merging(["PIXTRACK_PLUGIN_DIR": pluginDir]) { _, new in new })
                ?? GatewayRegistry.Options(pluginDirectory: pluginDir)
        } catch {
            throw ServerOptions.UsageError(message: error.message)
        }
        if env["PIXTRACK_PLUGIN_TIMEOUT_MS"] == nil { options.callTimeoutMs = configuration.gatewayTimeoutMs }
        options.hostSecrets = Array(configuration.webhookSecrets.values)
        let registry = GatewayRegistry.scan(options: options, logger: logger)
        let quota = options.maxPluginThreads
        metrics.gauge("pixtrack_plugin_calls_in_flight", help: "Plugin calls running, by plugin (each has a quota of \(quota)).") {
            registry.plugins.map { ([("plugin", $0.name)], Double(registry.callsInFlight(plugin: $0.name))) }
        }
        metrics.gauge("pixtrack_plugin_healthy", help: "1 while a plugin answers; 0 while its runner keeps crashing (calls fail fast).") {
            registry.plugins.map { ([("plugin", $0.name)], registry.runnerHealth(plugin: $0.name)?.healthy == false ? 0 : 1) }
        }
        metrics.gauge("pixtrack_plugin_runner_restarts_total", help: "Times a plugin's runner process died or was killed and was started again.") {
            registry.plugins.compactMap { p in registry.runnerHealth(plugin: p.name).map { ([("plugin", p.name)], Double($0.restarts)) } }
        }
        service = PaymentService(pool: storage.pool, configuration: configuration, bots: SQLBotGateways(pool: storage.pool, secrets: secrets, logger: logger),
                                 tokens: ResolverTokens(resolver: tracking.resolver), tracking: StoreTracking(store: tracking.store),
                                 gateways: RegistryGateways(registry: registry), logger: logger, metrics: metrics)
        let inbox = WebhookInbox(service: service)
        let workers = env["PIXTRACK_PAYMENT_WORKERS"] == "0" ? nil : PaymentWorkers(reconciler: Reconciler(service: service), inbox: inbox)
        self.workers = workers
        let hub = PaymentEventHub(pool: storage.pool, logger: logger)
        let watchers = PaymentWatchers(hub: hub, pool: storage.pool, configuration: try Self.watchConfiguration(env))
        let notifications = env["PIXTRACK_PAYMENT_WORKERS"] == "0" ? nil
            : NotificationSender(pool: storage.pool, bots: SQLBotGateways(pool: storage.pool, secrets: secrets, logger: logger),
                                 configuration: try Self.notificationConfiguration(env), metrics: metrics, logger: logger)
        let listener = PGListener(url: storage.databaseURL, channel: PaymentEventLog.channel, logger: logger) { _ in
            hub.wakeUp()
            notifications?.wakeUp()
        }
        self.listener = listener
        self.hub = hub
        self.watchers = watchers
        self.notifications = notifications
        metrics.gauge("pixtrack_payment_watches_open", help: "WatchPayments streams open on this instance.") {
            [([], Double(watchers.openCount))]
        }
        metrics.gauge("pixtrack_payment_watches_cut_off", help: "Watchers cut off (RESOURCE_EXHAUSTED) for not reading, since start.") {
            [([], Double(watchers.cutOffCount))]
        }
        metrics.gauge("pixtrack_payment_events_appended", help: "Payment events appended to the log (by any instance) that this instance has read since start.") {
            [([], Double(hub.eventsRead))]
        }
        metrics.gauge("pixtrack_payment_events_listening", help: "1 while the LISTEN connection for payment events is up.") {
            [([], listener.isConnected ? 1 : 0)]
        }
        let proxies = tracking.configuration.trustedProxies
        handlers = PaymentHandlers(service: service, inbox: inbox, stored: { workers?.webhookArrived() },
                                   clientIP: { r in proxies.clientIP(peer: r.peer, forwardedFor: r.headers.filter { $0.name == "x-forwarded-for" }.map(\.value)) },
                                   watchers: watchers, notifications: notifications)
        let secrets = configuration.webhookSecrets.keys.sorted().joined(separator: ",")
        logger.info("payments_ready", ("plugins", registry.plugins.map(\.name).joined(separator: ",")),
                    ("webhook_gateways", secrets), ("gateway_timeout_ms", String(configuration.gatewayTimeoutMs)))
    }

    var methods: [RPCMethod] { handlers.methods }

    /// The event reader, its LISTEN connection and the notification sender.
    func startEvents() {
        hub.start()
        listener.start()
        notifications?.start()
    }

    func stopEvents() async {
        listener.stop()
        await notifications?.shutdown()
        await hub.shutdown()
    }

    func installRoutes(into routes: inout HTTPRoutes) {
        let h = handlers
        routes.add("POST", "/webhooks/{gateway}/{secret}") { request, params in await h.webhookRoute(request, params) }
    }
}

// MARK: - Adapters to the tracking half

/// Bot → gateway account. `BotDirectory` returns credentials only as "is set" (write-only
/// secrets), so this reads the same `bots` columns itself and opens the sealed ones. A value that
/// does not open fails the lookup (FAILED_PRECONDITION, logged without the value): the caller
/// sends nothing.
struct SQLBotGateways: BotGatewayDirectory {
    let pool: PGPool
    let secrets: SecretKeyring?
    let logger: Logger

    func account(botID: Int64) async throws -> BotGatewayAccount? {
        try await one("WHERE id = $1", [.int(botID)])
    }

    func anyAccount(gateway: String) async throws -> BotGatewayAccount? {
        try await one("WHERE gateway_plugin = $1 AND enabled ORDER BY id LIMIT 1", [.text(gateway)])
    }

    private func one(_ condition: String, _ params: [PGValue?]) async throws -> BotGatewayAccount? {
        let row = try await pool.withConnection { c in
            try c.query("""
                SELECT id, enabled, gateway_plugin, gateway_base_url, coalesce(gateway_credentials, '') AS creds,
                       meta_pixel_id, meta_test_event_code, notify_url, coalesce(notify_secret, '') AS notify_secret
                FROM bots \(condition)
                """, params).first
        }
        guard let row else { return nil }
        let botID = try row.int64("id") ?? 0
        func open(_ name: String, _ column: SecretColumn) throws -> String {
            guard let stored = try row.string(name), !stored.isEmpty else { return "" }
            do { return try SecretOpening.open(stored, column, botID: botID, secrets: secrets) } catch {
                logger.error("secret_unusable", ("bot", String(botID)), ("column", column.rawValue), ("error", error.description))
                throw RPCError(.failedPrecondition, "bot \(botID): the stored \(column.rawValue) cannot be used (\(error.description)); nothing was sent")
            }
        }
        let creds = try open("creds", .gatewayCredentials)
        var credentials: [String: String] = [:]
        for (k, v) in (try? JSON.parse(Array((creds.isEmpty ? "{}" : creds).utf8)))?.object ?? [:] {
            credentials[k] = v.string ?? v.int64.map(String.init) ?? ""
        }
        var account = BotGatewayAccount(botID: botID, enabled: try row.bool("enabled") ?? false,
                                 gateway: try row.string("gateway_plugin") ?? "",
                                 // Bots have no plugin-options column yet: non-secret settings such as
                                 // Paradise's `product_hash` ride in the credentials map and reach
                                 // the plugin as options too (still redacted as credentials).
                                 config: GatewayConfig(credentials: credentials, baseURL: try row.string("gateway_base_url") ?? "",
                                                       options: credentials),
                                 metaPixelID: try row.string("meta_pixel_id") ?? "",
                                 metaTestEventCode: try row.string("meta_test_event_code") ?? "")
        account.notifyURL = try row.string("notify_url") ?? ""
        account.notifySecret = try open("notify_secret", .notifySecret)
        return account
    }
}

/// The token recovery chain of `ResolveToken`; any failure means "no token".
struct ResolverTokens: TokenRecovery {
    let resolver: TokenResolver

    func recover(botID: Int64, telegramUserID: Int64) async -> (token: String, source: Payments.TokenSource) {
        guard let r = try? await resolver.resolve(botID: botID, telegramUserID: telegramUserID), !r.token.isEmpty else {
            return ("", .none)
        }
        return (r.token, Payments.TokenSource(rawValue: r.source.rawValue) ?? .none)
    }
}

/// `tracking:{token}`; Redis down means "unknown".
struct StoreTracking: TrackingLookup {
    let store: TrackingStore

    func snapshot(token: String) async -> TrackingSnapshot? {
        guard let d = try? await store.data(for: token) else { return nil }
        var s = TrackingSnapshot()
        s.fbp = d.fbp
        s.fbc = d.fbc
        s.clientIP = d.clientIP
        s.userAgent = d.userAgent
        s.eventSourceURL = d.eventSourceURL
        s.fbclid = d.fbclid
        s.utm.source = d.utmSource
        s.utm.medium = d.utmMedium
        s.utm.campaign = d.utmCampaign
        s.utm.content = d.utmContent
        s.utm.term = d.utmTerm
        return s
    }
}
