import Postgres

/// Retention of `bot_users`: the Telegram names (first, last, username) of users not seen for
/// N days are cleared; the binding (token, fbclid, chat) stays, so recovery still works, and a
/// later /start writes the names again.
public enum BotUserRetention {
    /// Up to `limit` rows, skipping rows another transaction holds; returns how many changed.
    public static func removeNames(olderThanDays days: Int, limit: Int, on c: PGConnection) throws -> Int {
        try c.execute("""
            WITH due AS (
                SELECT bot_id, telegram_user_id FROM bot_users
                WHERE (first_name IS NOT NULL OR last_name IS NOT NULL OR telegram_username IS NOT NULL)
                  AND last_seen < now() - make_interval(days => $1::int)
                ORDER BY last_seen LIMIT $2 FOR UPDATE SKIP LOCKED)
            UPDATE bot_users u SET first_name = NULL, last_name = NULL, telegram_username = NULL
            FROM due WHERE u.bot_id = due.bot_id AND u.telegram_user_id = due.telegram_user_id
            """, [.int(Int64(days)), .int(Int64(limit))])
    }
}
