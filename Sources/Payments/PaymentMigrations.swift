import Postgres

/// The payments schema. Versions 100+ are ours (tracking uses 1–99). Never edit a released
/// migration: add a new version.
public enum PaymentMigrations {
    public static let all: [PGMigration] = [
        PGMigration(version: 100, name: "payments", sql: """
            CREATE TABLE payments (
                id                     bigserial   PRIMARY KEY,
                status                 text        NOT NULL CHECK (status IN ('pending_verification', 'pending', 'paid',
                                                   'failed', 'expired', 'refunded', 'chargeback')),
                inferred_failure       boolean     NOT NULL DEFAULT false,
                gateway                text        NOT NULL,
                bot_id                 bigint      NOT NULL,
                telegram_user_id       bigint      NOT NULL,
                amount_cents           bigint      NOT NULL CHECK (amount_cents > 0),
                description            text        NOT NULL DEFAULT '',
                customer_name          text        NOT NULL DEFAULT '',
                customer_email         text        NOT NULL DEFAULT '',
                customer_phone         text        NOT NULL DEFAULT '',
                customer_document      text        NOT NULL DEFAULT '',
                gateway_transaction_id text,
                gateway_hash           text        NOT NULL DEFAULT '',
                pix_code               text        NOT NULL DEFAULT '',
                qr_code_base64         text        NOT NULL DEFAULT '',
                expires_at_ms          bigint      NOT NULL DEFAULT 0,
                tracking_token         text        NOT NULL DEFAULT '',
                token_source           integer     NOT NULL DEFAULT 0,
                fbclid                 text        NOT NULL DEFAULT '',
                utm_source             text        NOT NULL DEFAULT '',
                utm_medium             text        NOT NULL DEFAULT '',
                utm_campaign           text        NOT NULL DEFAULT '',
                utm_content            text        NOT NULL DEFAULT '',
                utm_term               text        NOT NULL DEFAULT '',
                idempotency_key        text,
                request_fingerprint    text        NOT NULL DEFAULT '',
                legacy_payment_id      text,
                flagged                boolean     NOT NULL DEFAULT false,
                review_reason          text        NOT NULL DEFAULT '',
                gateway_message        text        NOT NULL DEFAULT '',
                checks                 integer     NOT NULL DEFAULT 0,
                next_check_at          timestamptz NOT NULL DEFAULT now(),
                purchase_queued        boolean     NOT NULL DEFAULT false,
                created_at             timestamptz NOT NULL DEFAULT now(),
                updated_at             timestamptz NOT NULL DEFAULT now(),
                paid_at                timestamptz
            );
            CREATE UNIQUE INDEX payments_gateway_txid ON payments (gateway, gateway_transaction_id)
                WHERE gateway_transaction_id IS NOT NULL;
            CREATE UNIQUE INDEX payments_idempotency_key ON payments (bot_id, idempotency_key)
                WHERE idempotency_key IS NOT NULL;
            CREATE UNIQUE INDEX payments_legacy_id ON payments (legacy_payment_id) WHERE legacy_payment_id IS NOT NULL;
            CREATE INDEX payments_open ON payments (next_check_at, id) WHERE status IN ('pending_verification', 'pending');
            CREATE INDEX payments_bot_created ON payments (bot_id, created_at DESC);
            CREATE INDEX payments_flagged ON payments (id) WHERE flagged;

            CREATE TABLE payment_status_history (
                id          bigserial   PRIMARY KEY,
                payment_id  bigint      NOT NULL REFERENCES payments (id),
                from_status text,
                to_status   text        NOT NULL,
                source      text        NOT NULL,
                detail      text        NOT NULL DEFAULT '',
                created_at  timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX payment_status_history_payment ON payment_status_history (payment_id, id);

            -- Raw webhooks, stored before anything else happens to them.
            CREATE TABLE webhook_inbox (
                id              bigserial   PRIMARY KEY,
                gateway         text        NOT NULL,
                headers         jsonb       NOT NULL DEFAULT '[]',
                body            bytea       NOT NULL,
                remote_addr     text        NOT NULL DEFAULT '',
                status          text        NOT NULL DEFAULT 'new'
                                CHECK (status IN ('new', 'processed', 'unmatched', 'parked')),
                attempts        integer     NOT NULL DEFAULT 0,
                next_attempt_at timestamptz NOT NULL DEFAULT now(),
                payment_id      bigint,
                result          text        NOT NULL DEFAULT '',
                received_at     timestamptz NOT NULL DEFAULT now(),
                processed_at    timestamptz
            );
            CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at, id) WHERE status IN ('new', 'unmatched');
            """),
        PGMigration(version: 101, name: "unresolved status, webhook ids, poll until expiry", sql: """
            -- `unresolved`: the outcome was never learned (DESIGN §2). Payments the old give-up
            -- marked `failed` with an inferred failure are exactly those.
            ALTER TABLE payments DROP CONSTRAINT payments_status_check;
            ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('pending_verification', 'pending',
                'paid', 'failed', 'expired', 'refunded', 'chargeback', 'unresolved'));
            UPDATE payments SET status = 'unresolved', inferred_failure = false, updated_at = now()
                WHERE status = 'failed' AND inferred_failure;
            -- The reconciler stopped polling this row (gave up); cleared when the payment reopens.
            ALTER TABLE payments ADD COLUMN reconcile_done boolean NOT NULL DEFAULT false;
            UPDATE payments SET reconcile_done = true WHERE status = 'pending' AND flagged;
            -- Webhooks that carry only the gateway's second id (ÁtomoPay's hash) match by it.
            CREATE INDEX payments_gateway_hash ON payments (gateway, gateway_hash) WHERE gateway_hash <> '';

            -- `rejected`: the plugin could not parse the body (answered 400, kept for audit);
            -- `retry`: matched, but the gateway's status API could not be asked yet.
            ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_status_check;
            ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
                CHECK (status IN ('new', 'processed', 'unmatched', 'retry', 'parked', 'rejected'));
            DROP INDEX webhook_inbox_due;
            CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at, id) WHERE status IN ('new', 'unmatched', 'retry');
            """),
        PGMigration(version: 102, name: "payment events and notifications", sql: """
            -- The durable event log (DESIGN §7): one row per status change, creation included,
            -- written in the transaction of the change. Ids come from the sequence under the
            -- append lock, so they are assigned in commit order: a reader that has seen id N
            -- has seen every committed event below N (the cursor never skips a late commit).
            CREATE SEQUENCE payment_events_id_seq;
            CREATE TABLE payment_events (
                id              bigint      PRIMARY KEY,
                payment_id      bigint      NOT NULL REFERENCES payments (id),
                bot_id          bigint      NOT NULL,
                previous_status text,
                status          text        NOT NULL,
                -- pixtrack.v1.Payment as the change left it.
                payment         bytea       NOT NULL,
                created_at      timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX payment_events_bot ON payment_events (bot_id, id);

            -- Outbound notifications (the bot's notify_url), one per event, delivered in order per
            -- payment by the notification worker (FOR UPDATE SKIP LOCKED, leased as 'sending').
            CREATE TABLE payment_notifications (
                event_id        bigint      PRIMARY KEY REFERENCES payment_events (id),
                payment_id      bigint      NOT NULL,
                bot_id          bigint      NOT NULL,
                status          text        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'sending', 'delivered', 'parked', 'skipped')),
                attempts        integer     NOT NULL DEFAULT 0,
                next_attempt_at timestamptz NOT NULL DEFAULT now(),
                last_result     text        NOT NULL DEFAULT '',
                created_at      timestamptz NOT NULL DEFAULT now(),
                -- Retries stop (parked) this long after it: creation, or the operator's requeue.
                retry_from      timestamptz NOT NULL DEFAULT now(),
                done_at         timestamptz
            );
            CREATE INDEX payment_notifications_due ON payment_notifications (next_attempt_at, event_id)
                WHERE status IN ('queued', 'sending');
            CREATE INDEX payment_notifications_open ON payment_notifications (payment_id, event_id)
                WHERE status IN ('queued', 'sending');
            CREATE INDEX payment_notifications_parked ON payment_notifications (bot_id, event_id) WHERE status = 'parked';
            """),
        PGMigration(version: 103, name: "retention", sql: """
            -- Retention (docs/secrets.md): a finished webhook keeps its metadata but loses its body
            -- and headers; a settled payment keeps its money facts but loses the buyer's contact
            -- data. The timestamps say when, and keep the background job from redoing a row.
            ALTER TABLE webhook_inbox ADD COLUMN pruned_at timestamptz;
            CREATE INDEX webhook_inbox_prunable ON webhook_inbox (received_at)
                WHERE pruned_at IS NULL AND status IN ('processed', 'rejected');
            ALTER TABLE payments ADD COLUMN pii_removed_at timestamptz;
            CREATE INDEX payments_pii_kept ON payments (updated_at)
                WHERE pii_removed_at IS NULL AND status IN ('paid', 'failed', 'expired', 'refunded', 'chargeback');
            CREATE INDEX payment_notifications_finished ON payment_notifications (done_at)
                WHERE status IN ('delivered', 'skipped');
            """),
        PGMigration(version: 104, name: "payment events ordered by transaction", sql: """
            -- The log's order without a global append lock (DESIGN §7): each event carries an
            -- order key (its transaction's id, or the payment's previous key when higher), and
            -- readers take (xid, id) order below the oldest transaction still running. Events
            -- written before keep xid 0: they are all committed, and they come first, in id
            -- order, as they did.
            ALTER TABLE payment_events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
            ALTER TABLE payment_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
            CREATE INDEX payment_events_order ON payment_events (xid, id);
            CREATE INDEX payment_events_payment ON payment_events (payment_id, xid);
            DROP INDEX payment_events_bot;
            CREATE INDEX payment_events_bot ON payment_events (bot_id, xid, id);
            """),
    ]
}
