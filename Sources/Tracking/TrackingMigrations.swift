import MetaCAPI
import Postgres

/// The tracking half's schema. Versions 1–99 are ours (MetaCAPI's outbox is 50); payments use
/// 100+. A migration never changes once released: add a new version instead.
public enum TrackingMigrations {
    /// Everything the tracking half needs, MetaCAPI's outbox included.
    public static var all: [PGMigration] { own + MetaMigrations.all }

    static let own: [PGMigration] = [
        PGMigration(version: 1, name: "bots_and_slugs", sql: """
            CREATE TABLE bots (
                id                   bigint      PRIMARY KEY CHECK (id > 0),  -- the Telegram bot id
                telegram_username    text        NOT NULL,
                meta_pixel_id        text        NOT NULL DEFAULT '',
                capi_token           text,       -- write-only secret: never returned, never logged
                meta_test_event_code text        NOT NULL DEFAULT '',
                gateway_plugin       text        NOT NULL DEFAULT '',
                gateway_base_url     text        NOT NULL DEFAULT '',
                gateway_credentials  jsonb,      -- write-only secret
                enabled              boolean     NOT NULL DEFAULT true,
                created_at           timestamptz NOT NULL DEFAULT now(),
                updated_at           timestamptz NOT NULL DEFAULT now()
            );
            CREATE UNIQUE INDEX bots_telegram_username_key ON bots (lower(telegram_username));
            CREATE INDEX bots_meta_pixel_id ON bots (meta_pixel_id) WHERE capi_token IS NOT NULL;

            CREATE TABLE slugs (
                slug       text        PRIMARY KEY,
                mode       text        NOT NULL CHECK (mode IN ('redirect', 'page')),
                strategy   text        NOT NULL CHECK (strategy IN ('round_robin', 'weighted', 'priority')),
                enabled    boolean     NOT NULL DEFAULT true,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            );

            CREATE TABLE slug_bots (
                slug     text    NOT NULL REFERENCES slugs (slug) ON DELETE CASCADE,
                bot_id   bigint  NOT NULL REFERENCES bots (id),
                position integer NOT NULL,
                weight   integer NOT NULL DEFAULT 1 CHECK (weight > 0),
                priority integer NOT NULL DEFAULT 0,
                enabled  boolean NOT NULL DEFAULT true,
                PRIMARY KEY (slug, bot_id)
            );
            """),
        PGMigration(version: 2, name: "bot_users", sql: """
            CREATE TABLE bot_users (
                bot_id              bigint      NOT NULL REFERENCES bots (id),
                telegram_user_id    bigint      NOT NULL,
                -- The bound token (32 hex), or a legacy 'tracking_…' value from the original system.
                tracking_session_id text,
                fbclid              text,
                last_start_param    text,
                chat_id             bigint,
                telegram_username   text,
                first_name          text,
                last_name           text,
                language_code       text,
                bound_at            timestamptz,
                first_seen          timestamptz NOT NULL DEFAULT now(),
                last_seen           timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (bot_id, telegram_user_id)
            );
            """),
        PGMigration(version: 3, name: "bot notifications", sql: """
            -- Payment events are POSTed to notify_url, signed with notify_secret (write-only).
            ALTER TABLE bots ADD COLUMN notify_url text NOT NULL DEFAULT '';
            ALTER TABLE bots ADD COLUMN notify_secret text;
            """),
        PGMigration(version: 4, name: "sealed gateway credentials", sql: """
            -- Secret columns hold pxs1 envelopes (text, docs/secrets.md); the credentials were
            -- jsonb. Values still in plaintext are sealed at the first start with a key.
            ALTER TABLE bots ALTER COLUMN gateway_credentials TYPE text USING gateway_credentials::text;
            """),
        PGMigration(version: 5, name: "bot users retention", sql: """
            -- Retention: Telegram names of users not seen for PIXTRACK_RETAIN_PII_DAYS are cleared.
            CREATE INDEX bot_users_named ON bot_users (last_seen)
                WHERE first_name IS NOT NULL OR last_name IS NOT NULL OR telegram_username IS NOT NULL;
            """),
    ]
}
