import Payments

/// `PIXTRACK_RETAIN_*`: how long finished rows and buyers' contact data are kept.
enum RetentionWiring {
    static let environmentHelp = """
      PIXTRACK_RETAIN_WEBHOOK_DAYS    processed/rejected webhooks keep only their metadata after N days (default 30)
      PIXTRACK_RETAIN_META_DAYS       sent/dropped Meta events are deleted after N days (default 30)
      PIXTRACK_RETAIN_NOTIFICATION_DAYS  delivered/skipped notifications are deleted after N days (default 30)
      PIXTRACK_RETAIN_PII_DAYS        settled payments lose the buyer's name, e-mail, phone and document after N days
                                      (default 90; amounts and statuses are kept for ever). 0 in any of these: keep for ever
      PIXTRACK_RETENTION_INTERVAL_MS / _BATCH   how often the job runs (default 600000) / rows per transaction (default 500)
    """

    static func configuration(_ env: [String: String]) throws(ServerOptions.UsageError) -> RetentionConfiguration {
        var r = RetentionConfiguration()
        r.webhookDays = try EnvNumber.int(env, "PIXTRACK_RETAIN_WEBHOOK_DAYS", r.webhookDays, 0...36_500)
        r.metaDays = try EnvNumber.int(env, "PIXTRACK_RETAIN_META_DAYS", r.metaDays, 0...36_500)
        r.notificationDays = try EnvNumber.int(env, "PIXTRACK_RETAIN_NOTIFICATION_DAYS", r.notificationDays, 0...36_500)
        r.piiDays = try EnvNumber.int(env, "PIXTRACK_RETAIN_PII_DAYS", r.piiDays, 0...36_500)
        r.interval = .milliseconds(try EnvNumber.int(env, "PIXTRACK_RETENTION_INTERVAL_MS", 600_000, 50...86_400_000))
        r.batchSize = try EnvNumber.int(env, "PIXTRACK_RETENTION_BATCH", r.batchSize, 1...10_000)
        return r
    }
}
