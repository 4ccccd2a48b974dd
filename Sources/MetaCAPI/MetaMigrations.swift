import Postgres

/// The outbox table. Versions 1–99 belong to the tracking half (this one is 50); payments use 100+.
public enum MetaMigrations {
    public static let all: [PGMigration] = [
        PGMigration(version: 50, name: "meta_events_outbox", sql: """
            CREATE TABLE meta_events (
                id              bigserial   PRIMARY KEY,
                pixel_id        text        NOT NULL,
                event_name      text        NOT NULL,
                event_id        text        NOT NULL,
                event_time      bigint      NOT NULL,
                payload         jsonb       NOT NULL,
                test_event_code text        NOT NULL DEFAULT '',
                status          text        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'sent', 'parked', 'dropped')),
                attempts        integer     NOT NULL DEFAULT 0,
                next_attempt_at timestamptz NOT NULL DEFAULT now(),
                last_error      text,
                created_at      timestamptz NOT NULL DEFAULT now(),
                updated_at      timestamptz NOT NULL DEFAULT now(),
                sent_at         timestamptz,
                UNIQUE (pixel_id, event_name, event_id)
            );
            -- What the sender scans: only queued rows, oldest due first.
            CREATE INDEX meta_events_due ON meta_events (next_attempt_at, id) WHERE status = 'queued';
            """),
        PGMigration(version: 51, name: "meta_events_sending", sql: """
            -- `sending`: claimed and committed before the POST, so a crash between Meta's answer and
            -- our record of it leaves a trace instead of a silent resend (see MetaPass).
            ALTER TABLE meta_events DROP CONSTRAINT meta_events_status_check;
            ALTER TABLE meta_events ADD CONSTRAINT meta_events_status_check
                CHECK (status IN ('queued', 'sending', 'sent', 'parked', 'dropped'));
            CREATE INDEX meta_events_sending ON meta_events (updated_at) WHERE status = 'sending';
            """),
        PGMigration(version: 52, name: "meta_events_retention", sql: """
            -- What retention deletes: events Meta took (sent) or that could never go (dropped).
            CREATE INDEX meta_events_finished ON meta_events (updated_at) WHERE status IN ('sent', 'dropped');
            """),
    ]
}
