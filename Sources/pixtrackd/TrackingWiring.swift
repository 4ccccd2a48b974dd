import MetaCAPI
import RPC
import Secrets
import Tracking
import WebRoutes

/// The tracking half and the Meta sender, configured from `PIXTRACK_*` variables.
struct TrackingWiring {
    let service: TrackingService
    /// Nil when `PIXTRACK_META_SENDER=0` (an instance that only queues).
    let sender: MetaSender?

    static let environmentHelp = """
      PIXTRACK_TRACKING_TTL_SECONDS   TTL of tracking keys in Redis (default 604800 = 7 days)
      PIXTRACK_TRUSTED_PROXIES        addresses/CIDRs whose X-Forwarded-For is believed, e.g. 127.0.0.1,10.0.0.0/8
      PIXTRACK_FBC_FROM_FBCLID=1      build fbc from fbclid when there is no _fbc cookie (opt-in)
      PIXTRACK_PUBLIC_BASE_URL        public origin of /go links, e.g. https://go.example.com (event_source_url)
      PIXTRACK_TELEGRAM_BASE_URL      where visitors are sent (default https://t.me)
      PIXTRACK_PIXEL_SCRIPT_URL       Meta pixel script for page-mode slugs (default connect.facebook.net fbevents.js)
      PIXTRACK_PAGE_TIMEOUT_MS        page mode: longest wait for the pixel before going on (default 2500)
      PIXTRACK_SLUG_CACHE_MS          how long a resolved slug is reused (default 2000; 0 = never)
      PIXTRACK_META_BASE_URL          Graph API base (default https://graph.facebook.com)
      PIXTRACK_META_API_VERSION       Graph API version (default v21.0)
      PIXTRACK_META_TEST_EVENT_CODE   test_event_code for events whose bot sets none
      PIXTRACK_META_POLL_MS / _BACKOFF_MS / _MAX_BACKOFF_MS / _TIMEOUT_MS / _BATCH_SIZE   sender tuning
                                      (defaults 1000 / 2000 / 600000 / 1500 / 1000)
      PIXTRACK_META_SENDING_LEASE_MS  an event left `sending` this long by a sender that died mid-request is
                                      recovered: a Purchase parked (Meta may count it), a PageView re-queued
                                      (default 60000; never below the request timeout + 5 s)
      PIXTRACK_META_SENDER=0          do not run the Conversions API sender in this instance
    """

    static func configuration(_ env: [String: String]) throws(ServerOptions.UsageError) -> (TrackingConfiguration, MetaSenderConfiguration, Bool) {
        var t = TrackingConfiguration()
        t.ttlSeconds = try EnvNumber.int(env, "PIXTRACK_TRACKING_TTL_SECONDS", t.ttlSeconds, 1...(365 * 86_400))
        if let v = env["PIXTRACK_TRUSTED_PROXIES"], !v.isEmpty {
            do { t.trustedProxies = try TrustedProxies(parsing: v) } catch { throw .init(message: "PIXTRACK_TRUSTED_PROXIES: \(error)") }
        }
        t.buildFbcFromFbclid = env["PIXTRACK_FBC_FROM_FBCLID"] == "1"
        t.publicBaseURL = try url(env, "PIXTRACK_PUBLIC_BASE_URL", "")
        t.telegramBaseURL = try url(env, "PIXTRACK_TELEGRAM_BASE_URL", t.telegramBaseURL)
        t.pixelScriptURL = try url(env, "PIXTRACK_PIXEL_SCRIPT_URL", t.pixelScriptURL)
        t.pageRedirectTimeoutMs = try EnvNumber.int(env, "PIXTRACK_PAGE_TIMEOUT_MS", t.pageRedirectTimeoutMs, 0...3000)
        t.slugCacheTTL = .milliseconds(try EnvNumber.int(env, "PIXTRACK_SLUG_CACHE_MS", 2000, 0...3_600_000))

        var m = MetaSenderConfiguration()
        m.baseURL = try url(env, "PIXTRACK_META_BASE_URL", m.baseURL)
        if let v = env["PIXTRACK_META_API_VERSION"], !v.isEmpty {
            guard v.hasPrefix("v"), v.utf8.count <= 10, v.utf8.dropFirst().allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }) else {
                throw .init(message: "PIXTRACK_META_API_VERSION must look like v21.0, got '\(v)'")
            }
            m.apiVersion = v
        }
        m.defaultTestEventCode = env["PIXTRACK_META_TEST_EVENT_CODE"] ?? ""
        m.pollInterval = .milliseconds(try EnvNumber.int(env, "PIXTRACK_META_POLL_MS", 1000, 10...600_000))
        m.backoff = MetaBackoff(base: .milliseconds(try EnvNumber.int(env, "PIXTRACK_META_BACKOFF_MS", 2000, 1...3_600_000)),
                                maximum: .milliseconds(try EnvNumber.int(env, "PIXTRACK_META_MAX_BACKOFF_MS", 600_000, 1...86_400_000)))
        m.requestTimeout = .milliseconds(try EnvNumber.int(env, "PIXTRACK_META_TIMEOUT_MS", 1500, 100...120_000))
        m.batchSize = try EnvNumber.int(env, "PIXTRACK_META_BATCH_SIZE", 1000, 1...1000)
        m.sendingLease = .milliseconds(try EnvNumber.int(env, "PIXTRACK_META_SENDING_LEASE_MS", 60_000, 1...86_400_000))
        return (t, m, env["PIXTRACK_META_SENDER"] != "0")
    }

    private static func url(_ env: [String: String], _ name: String, _ fallback: String) throws(ServerOptions.UsageError) -> String {
        guard var v = env[name], !v.isEmpty else { return fallback }
        guard (v.hasPrefix("http://") || v.hasPrefix("https://")), v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") }) else {
            throw .init(message: "\(name) must be an http(s) URL, got '\(v)'")
        }
        while v.hasSuffix("/") { v.removeLast() }
        return v
    }

    init(storage: Storage, environment: [String: String], metrics: Metrics, logger: Logger, secrets: SecretKeyring?) throws(ServerOptions.UsageError) {
        let (tracking, meta, runSender) = try Self.configuration(environment)
        let sender = runSender
            ? MetaSender(pool: storage.pool, configuration: meta, tokens: BotAccessTokens(secrets: secrets, logger: logger), metrics: metrics, logger: logger)
            : nil
        self.sender = sender
        service = TrackingService(pool: storage.pool, redis: storage.redis, outboxPipeline: storage.outbox, configuration: tracking,
                                  metrics: metrics, logger: logger, secrets: secrets, onQueued: { sender?.wakeUp() })
    }

    func installRoutes(into routes: inout HTTPRoutes) { service.installRoutes(into: &routes) }
}
