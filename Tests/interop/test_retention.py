"""Retention (docs/secrets.md §3): past their age, finished webhooks keep only their metadata,
sent/dropped Meta events and delivered/skipped notifications are deleted, and settled payments
lose the buyer's contact data (in the row and in its events) but keep every money fact. Rows in
flight and rows younger than their age are left alone. Two instances share the work: each row is
counted once in pixtrack_retention_rows_total."""

from __future__ import annotations

import pytest

import support
from payments_support import payment_env
from tracking_support import metric, psql, wait_until

from pixtrack.v1 import gateway_pb2, payment_pb2 as ppb

OLD = "now() - interval '200 days'"
MID = "now() - interval '60 days'"     # past the 30-day ages, within the 90 PII days
NEW = "now() - interval '1 day'"
LATER = "now() + interval '10 days'"   # due dates the workers must not reach during the test


def one(sql: str, db: str) -> str:
    return psql(sql, db)


def payment(db, status, at, *, flagged=False, txid=None) -> int:
    return int(one(f"""
        INSERT INTO payments (status, gateway, bot_id, telegram_user_id, amount_cents, customer_name, customer_email,
                              customer_phone, customer_document, gateway_transaction_id, flagged, next_check_at,
                              created_at, updated_at, paid_at)
        VALUES ('{status}', 'sandbox', 777, 4242, 12345, 'Maria Buyer', 'maria@example.com', '+5511999990000',
                '12345678909', {f"'{txid}'" if txid else 'NULL'}, {str(flagged).lower()}, {LATER}, {at}, {at},
                {at if status == 'paid' else 'NULL'})
        RETURNING id""", db))


def event(db, pid: int, with_customer: bool) -> int:
    p = ppb.Payment(id=pid, reference=f"PAY-{pid}", status=ppb.PAYMENT_STATUS_PAID, gateway="sandbox", amount_cents=12345,
                    bot_id=777, telegram_user_id=4242)
    if with_customer:
        p.customer.CopyFrom(gateway_pb2.Customer(name="Maria Buyer", email="maria@example.com", phone="+5511999990000",
                                                 document="12345678909"))
    return int(one(f"""
        INSERT INTO payment_events (id, payment_id, bot_id, status, payment)
        VALUES (nextval('payment_events_id_seq'), {pid}, 777, 'paid', decode('{p.SerializeToString().hex()}', 'hex'))
        RETURNING id""", db))


def notification(db, event_id: int, pid: int, status: str, done_at: str) -> int:
    one(f"""INSERT INTO payment_notifications (event_id, payment_id, bot_id, status, next_attempt_at, done_at)
            VALUES ({event_id}, {pid}, 777, '{status}', {LATER}, {done_at if status != 'queued' else 'NULL'})""", db)
    return event_id


def webhook(db, status: str, at: str) -> int:
    return int(one(f"""
        INSERT INTO webhook_inbox (gateway, headers, body, remote_addr, status, next_attempt_at, received_at, processed_at, result)
        VALUES ('sandbox', '[{{"name": "content-type", "value": "application/json"}}]',
                convert_to('{{"email": "maria@example.com"}}', 'UTF8'), '203.0.113.9', '{status}', {LATER}, {at},
                {at if status in ('processed', 'rejected', 'parked') else 'NULL'}, 'matched PAY-1')
        RETURNING id""", db))


def bot_user(db, at: str) -> int:
    user = int(one("SELECT (random() * 1e12)::bigint + 1", db))
    one(f"""INSERT INTO bots (id, telegram_username) VALUES (777, 'ret_bot') ON CONFLICT DO NOTHING;
            INSERT INTO bot_users (bot_id, telegram_user_id, tracking_session_id, fbclid, chat_id, telegram_username, first_name,
                                   last_name, first_seen, last_seen)
            VALUES (777, {user}, 'aaaabbbbccccddddeeeeffff00001111', 'fbclid-1', {user}, 'maria_tg', 'Maria', 'Buyer', {at}, {at})""", db)
    return user


def meta_event(db, status: str, at: str, n: int) -> int:
    return int(one(f"""
        INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload, status, next_attempt_at, created_at, updated_at)
        VALUES ('999', 'PageView', 'ret-{n}-{status}', extract(epoch FROM {at})::bigint, '{{"em": "hash"}}', '{status}',
                {LATER}, {at}, {at})
        RETURNING id""", db))


@pytest.fixture(scope="module")
def rows(db_url):
    """Every kind of row, old and young, finished and in flight, before any server runs retention."""
    # Migrations first: a server that runs no retention (payment workers off) and stops.
    with support.start_server(env={"DATABASE_URL": db_url, "PIXTRACK_PAYMENT_WORKERS": "0", "PIXTRACK_META_SENDER": "0"},
                              name="pixtrackd (migrate)"):
        pass
    r = {
        "p_old_paid": payment(db_url, "paid", OLD, txid="tx-old-paid"),
        "p_old_refunded": payment(db_url, "refunded", OLD),
        "p_mid_paid": payment(db_url, "paid", MID),
        "p_old_pending": payment(db_url, "pending", OLD),
        "p_old_unresolved": payment(db_url, "unresolved", OLD),
        "p_old_flagged": payment(db_url, "paid", OLD, flagged=True),
        "p_new_paid": payment(db_url, "paid", NEW),
    }
    r["e_old"] = event(db_url, r["p_old_paid"], True)
    r["e_pending"] = event(db_url, r["p_old_pending"], True)
    r["n_old_delivered"] = notification(db_url, r["e_old"], r["p_old_paid"], "delivered", OLD)
    r["n_old_skipped"] = notification(db_url, event(db_url, r["p_old_paid"], False), r["p_old_paid"], "skipped", MID)
    r["n_old_parked"] = notification(db_url, event(db_url, r["p_old_paid"], False), r["p_old_paid"], "parked", OLD)
    r["n_old_queued"] = notification(db_url, event(db_url, r["p_old_paid"], False), r["p_old_paid"], "queued", OLD)
    r["n_new_delivered"] = notification(db_url, event(db_url, r["p_new_paid"], False), r["p_new_paid"], "delivered", NEW)
    r["w_old_processed"] = webhook(db_url, "processed", OLD)
    r["w_mid_rejected"] = webhook(db_url, "rejected", MID)
    r["w_old_retry"] = webhook(db_url, "retry", OLD)
    r["w_old_parked"] = webhook(db_url, "parked", OLD)
    r["w_new_processed"] = webhook(db_url, "processed", NEW)
    r["u_old"] = bot_user(db_url, OLD)
    r["u_mid"] = bot_user(db_url, MID)
    for i, (status, at) in enumerate([("sent", OLD), ("dropped", MID), ("parked", OLD), ("sent", NEW), ("queued", OLD)]):
        r[f"m_{i}_{status}"] = meta_event(db_url, status, at, i)
    return r


def test_retention_removes_what_it_should_and_nothing_else(db_url, meta, rows):
    money_before = one("SELECT string_agg(id || ':' || status || ':' || amount_cents || ':' || coalesce(gateway_transaction_id, ''), ',' "
                       "ORDER BY id) FROM payments", db_url)
    env = payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_RETENTION_INTERVAL_MS="100", PIXTRACK_RETENTION_BATCH="1",
                      PIXTRACK_RETAIN_WEBHOOK_DAYS="30", PIXTRACK_RETAIN_META_DAYS="30", PIXTRACK_RETAIN_NOTIFICATION_DAYS="30",
                      PIXTRACK_RETAIN_PII_DAYS="90", PIXTRACK_RECONCILE_INTERVAL_MS="600000")
    # Batches of one row: two instances must interleave, and SKIP LOCKED keeps them off each other's rows.
    a = support.start_server(env=env, name="pixtrackd (retention a)")
    b = support.start_server(env=env, name="pixtrackd (retention b)")
    try:
        expected = {("webhook_inbox", "pruned"): 2, ("meta_events", "deleted"): 2, ("payment_notifications", "deleted"): 2,
                    ("payments", "pii_removed"): 2, ("payment_events", "pii_removed"): 1, ("bot_users", "names_removed"): 1}

        def counted(table, action):
            prefix = f'pixtrack_retention_rows_total{{table="{table}",action="{action}"}}'
            return metric(a.port, prefix) + metric(b.port, prefix)

        wait_until(lambda: all(counted(*k) >= v for k, v in expected.items()), timeout=30, what="the retention passes")
        # A few more passes find nothing more: each row was counted once, by one instance.
        import time
        time.sleep(0.5)
        for k, v in expected.items():
            assert counted(*k) == v, (k, counted(*k))
    finally:
        for s in (a, b):
            support.stop_and_check(s)

    # Payments: contact data gone from settled ones only; money facts untouched everywhere.
    pii = {k: one(f"SELECT customer_name || customer_email || customer_phone || customer_document || '|' || "
                  f"(pii_removed_at IS NOT NULL) FROM payments WHERE id = {v}", db_url)
           for k, v in rows.items() if k.startswith("p_")}
    assert pii["p_old_paid"] == "|true" and pii["p_old_refunded"] == "|true", pii
    for k in ("p_mid_paid", "p_old_pending", "p_old_unresolved", "p_old_flagged", "p_new_paid"):
        assert pii[k].startswith("Maria Buyermaria@example.com") and pii[k].endswith("|false"), (k, pii[k])
    assert one("SELECT string_agg(id || ':' || status || ':' || amount_cents || ':' || coalesce(gateway_transaction_id, ''), ',' "
               "ORDER BY id) FROM payments", db_url) == money_before

    # Telegram names of users unseen for the PII age are cleared; the binding stays.
    users = {k: one(f"SELECT coalesce(first_name, '') || coalesce(last_name, '') || coalesce(telegram_username, '') || '|' || "
                    f"tracking_session_id || '|' || fbclid FROM bot_users WHERE telegram_user_id = {rows[k]}", db_url)
             for k in ("u_old", "u_mid")}
    assert users["u_old"] == "|aaaabbbbccccddddeeeeffff00001111|fbclid-1", users
    assert users["u_mid"] == "MariaBuyermaria_tg|aaaabbbbccccddddeeeeffff00001111|fbclid-1", users

    # Its event lost the customer and kept the rest; a pending payment's event kept everything.
    def event_payment(eid):
        hexed = one(f"SELECT encode(payment, 'hex') FROM payment_events WHERE id = {eid}", db_url)
        return ppb.Payment.FromString(bytes.fromhex(hexed))
    old = event_payment(rows["e_old"])
    assert not old.HasField("customer") and old.amount_cents == 12345 and old.status == ppb.PAYMENT_STATUS_PAID, old
    assert event_payment(rows["e_pending"]).customer.email == "maria@example.com"

    # Notifications: finished and old ones deleted; parked, queued and young ones kept.
    kept = {int(x) for x in one("SELECT event_id FROM payment_notifications", db_url).split()}
    assert rows["n_old_delivered"] not in kept and rows["n_old_skipped"] not in kept
    assert {rows["n_old_parked"], rows["n_old_queued"], rows["n_new_delivered"]} <= kept
    assert int(one(f"SELECT count(*) FROM payment_events WHERE id = {rows['n_old_delivered']}", db_url)) == 1

    # Webhooks: finished and old ones keep metadata only.
    hooks = {k: one(f"SELECT status || '|' || octet_length(body) || '|' || headers::text || '|' || remote_addr || '|' || result || '|' || "
                    f"(pruned_at IS NOT NULL) FROM webhook_inbox WHERE id = {v}", db_url)
             for k, v in rows.items() if k.startswith("w_")}
    assert hooks["w_old_processed"] == "processed|0|[]||matched PAY-1|true", hooks
    assert hooks["w_mid_rejected"] == "rejected|0|[]||matched PAY-1|true", hooks
    for k in ("w_old_retry", "w_old_parked", "w_new_processed"):
        assert hooks[k].endswith("203.0.113.9|matched PAY-1|false") and "|0|" not in hooks[k], (k, hooks[k])

    # Meta events: sent/dropped and old deleted; parked, queued and young kept.
    left = {int(x) for x in one("SELECT id FROM meta_events", db_url).split()}
    assert rows["m_0_sent"] not in left and rows["m_1_dropped"] not in left
    assert {rows["m_2_parked"], rows["m_3_sent"], rows["m_4_queued"]} <= left
