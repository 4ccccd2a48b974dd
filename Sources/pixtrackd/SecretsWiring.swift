import Postgres
import RPC
import Secrets

/// The secret columns at startup and in `pixtrackd rotate-secrets` (docs/secrets.md): which key
/// ids the stored values name, sealing values still in plaintext, re-sealing under the current
/// key. Work goes in small batches, each its own committed transaction, rows taken with
/// `FOR UPDATE SKIP LOCKED` and written only if still what was read, so several instances (or a
/// rotation next to serving instances) never undo each other's writes, and an interrupted run
/// resumes where it stopped.
struct SecretColumns {
    let pool: PGPool
    let logger: Logger

    static let columns = SecretColumn.allCases

    /// Stored values per key id ("" for plaintext), over every secret column.
    func inventory() async throws -> [String: Int] {
        let union = Self.columns.map { c in
            "SELECT CASE WHEN \(c.rawValue) ~ '^pxs1:[0-9a-f]{16}:' THEN substr(\(c.rawValue), 6, 16) ELSE '' END AS kid FROM bots WHERE \(c.rawValue) IS NOT NULL"
        }.joined(separator: " UNION ALL ")
        let rows = try await pool.withConnection { try $0.query("SELECT kid, count(*) AS n FROM (\(union)) s GROUP BY kid") }
        var out: [String: Int] = [:]
        for r in rows { out[try r.string("kid") ?? ""] = try r.int("n") ?? 0 }
        return out
    }

    /// What a startup with `ring` must refuse: the message for stderr, nil when it may go on.
    static func refusal(inventory: [String: Int], ring: SecretKeyring?) -> String? {
        let total = inventory.values.reduce(0, +)
        let sealedIDs = inventory.keys.filter { !$0.isEmpty }.sorted()
        guard let ring else {
            guard total > 0 else { return nil }
            let what = sealedIDs.isEmpty ? "" : " (sealed with key id \(sealedIDs.joined(separator: ", ")))"
            return "\(total) secret values are stored in the database\(what) but PIXTRACK_SECRETS_KEY_FILE is not set: give the key file they were sealed with"
        }
        let unknown = sealedIDs.filter { ring.key(id: $0) == nil }
        guard !unknown.isEmpty else { return nil }
        let n = unknown.map { inventory[$0] ?? 0 }.reduce(0, +)
        return "\(n) stored secret values are sealed with key id \(unknown.joined(separator: ", ")), which cannot be opened: PIXTRACK_SECRETS_KEY_FILE has key id \(ring.current.id)"
            + (ring.old.isEmpty ? " and PIXTRACK_SECRETS_OLD_KEY_FILES is empty" : ", PIXTRACK_SECRETS_OLD_KEY_FILES has \(ring.old.map(\.id).joined(separator: ", "))")
            + ". Start with the key those values were sealed with (as the current key or an old one)."
    }

    struct Progress: Sendable {
        var resealed = 0
        var failed = 0
        var batches = 0
    }

    /// Seals every value not under the current key (`onlyPlaintext`: only values not sealed at
    /// all, the first-start migration). Values that do not open are left as they are and counted
    /// in `failed`. `report` is called after each committed batch.
    func reseal(ring: SecretKeyring, onlyPlaintext: Bool, batchSize: Int = 100,
                report: @Sendable (Progress, Int) -> Void = { _, _ in }) async throws -> Progress {
        let pattern = onlyPlaintext ? "pxs1:%" : ring.currentPrefix + "%"
        let needs = Self.columns.map { "(\($0.rawValue) IS NOT NULL AND \($0.rawValue) NOT LIKE $2)" }.joined(separator: " OR ")
        var total = Progress()
        var passes = 0
        while true {
            passes += 1
            var cursor: Int64 = 0
            var failedThisPass = 0
            while true {
                let after = cursor
                let (last, step) = try await pool.transaction { c -> (Int64?, Progress) in
                    let rows = try c.query("""
                        SELECT id, \(Self.columns.map(\.rawValue).joined(separator: ", ")) FROM bots
                        WHERE id > $1 AND (\(needs)) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
                        """, [.int(after), .text(pattern), .int(Int64(batchSize))])
                    var step = Progress()
                    var last: Int64?
                    for r in rows {
                        let id = try r.int64("id") ?? 0
                        last = id
                        for column in Self.columns {
                            guard let old = try r.string(column.rawValue), !Self.matches(old, pattern: pattern) else { continue }
                            let context = column.context(botID: id)
                            let plain: String
                            do {
                                plain = SecretKeyring.isEnvelope(old) ? try ring.openString(old, context: context) : old
                            } catch {
                                step.failed += 1
                                logger.error("secret_unusable", ("bot", String(id)), ("column", column.rawValue), ("error", String(describing: error)))
                                continue
                            }
                            let sealed = try ring.seal(plain, context: context)
                            // Compare-and-swap: a value written meanwhile (it is already sealed under the current key) wins.
                            step.resealed += try c.execute("UPDATE bots SET \(column.rawValue) = $1 WHERE id = $2 AND \(column.rawValue) = $3",
                                                           [.text(sealed), .int(id), .text(old)])
                        }
                    }
                    return (last, step)
                }
                guard let last else { break }
                cursor = last
                total.resealed += step.resealed
                total.failed += step.failed
                failedThisPass += step.failed
                total.batches += 1
                report(total, try await remaining(pattern: pattern))
            }
            // Rows another instance held were skipped: look again until only unusable values remain.
            let left = try await remaining(pattern: pattern)
            if left <= failedThisPass || passes >= 100 { return total }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Values still to do.
    func remaining(pattern: String) async throws -> Int {
        let count = Self.columns.map { "count(*) FILTER (WHERE \($0.rawValue) IS NOT NULL AND \($0.rawValue) NOT LIKE $1)" }.joined(separator: " + ")
        return try await pool.withConnection { try $0.query("SELECT \(count) AS n FROM bots", [.text(pattern)]).first?.int("n") ?? 0 }
    }

    static func matches(_ value: String, pattern: String) -> Bool {
        value.hasPrefix(String(pattern.dropLast()))
    }
}

extension SecretColumns {
    static let environmentHelp = """
      PIXTRACK_SECRETS_KEY_FILE       file holding the base64 of 32 random bytes (openssl rand -base64 32): seals the
                                      secret columns (AES-256-GCM). Without it secrets are refused, and startup
                                      refuses a database that holds any (docs/secrets.md)
      PIXTRACK_SECRETS_OLD_KEY_FILES  comma-separated key files that may still open values (during a rotation)
    """

    /// Startup: refuse keys that cannot open what is stored (exit 2, the message names the key
    /// ids), then seal values still in plaintext. Returns the message to print when refused.
    func prepare(ring: SecretKeyring?) async throws -> String? {
        let stored = try await inventory()
        if let refusal = Self.refusal(inventory: stored, ring: ring) { return refusal }
        guard let ring else {
            logger.warning("secrets_key_missing", ("effect", "no PIXTRACK_SECRETS_KEY_FILE: UpsertBot refuses credentials, tokens and notify secrets"))
            return nil
        }
        if (stored[""] ?? 0) > 0 {
            let done = try await reseal(ring: ring, onlyPlaintext: true)
            logger.info("secrets_sealed", ("values", String(done.resealed)), ("failed", String(done.failed)), ("key_id", ring.current.id))
        }
        let counts = stored.filter { !$0.key.isEmpty }.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
        logger.info("secrets_ready", ("key_id", ring.current.id), ("old_key_ids", ring.old.map(\.id).joined(separator: ",")),
                    ("stored_by_key", counts))
        return nil
    }

    /// `pixtrackd rotate-secrets`: every value re-sealed under the current key; a progress line
    /// per batch on stdout. Returns the exit status (1 when some values did not open).
    func rotate(ring: SecretKeyring) async throws -> Int32 {
        let pattern = ring.currentPrefix + "%"
        let before = try await remaining(pattern: pattern)
        print("rotate-secrets: \(before) values to re-seal under key id \(ring.current.id)")
        let done = try await reseal(ring: ring, onlyPlaintext: false) { p, left in
            print("rotate-secrets: batch \(p.batches): \(p.resealed) re-sealed, \(p.failed) unusable, \(left) left")
        }
        let left = try await remaining(pattern: pattern)
        print("rotate-secrets: done: \(done.resealed) re-sealed, \(done.failed) unusable, \(left) not under key id \(ring.current.id)")
        return left == 0 ? 0 : 1
    }
}
