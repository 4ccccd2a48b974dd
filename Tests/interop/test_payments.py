"""The payment half against real PostgreSQL and Redis, the sandbox plugin, the fake gateways and
the fake Graph API: GeneratePix outcomes, webhooks (early, duplicate, forged, unknown, wrong
secret, amount mismatch, refund), Redis/PostgreSQL down, idempotency, two reconcilers, and the
crash test (200 concurrent GeneratePix, SIGKILL, restart: no orphan PIX)."""

from __future__ import annotations

import hashlib
import os
import json
import signal
import threading
import time
import urllib.parse

import grpc
import pytest

import support
from payments_support import (SECRETS, Client, FakeGateways, history, payment_env, purchases, webhook)
from tracking_support import TCPProxy, http_request, metric, new_schema, pixel_id, psql, unique_id, wait_until

from pixtrack.v1 import gateway_pb2 as gpb, payment_pb2 as ppb, tracking_pb2 as tpb

S = ppb  # statuses: S.PAYMENT_STATUS_PAID …
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


@pytest.fixture(scope="module")
def srv(meta, db_url):
    s = support.start_server(env=payment_env(db_url, meta, PIXTRACK_META_SENDER="0"), name="pixtrackd (payments)")
    yield s
    support.stop_and_check(s)
    assert "paradise-key" not in s.log() and SECRETS["paradise"] not in s.log(), "a secret appeared in the log"


@pytest.fixture(scope="module")
def cl(srv):
    c = Client(srv.port)
    yield c
    c.close()


def wait_status(cl, pid, status, timeout=10.0):
    return wait_until(lambda: (p := cl.get(pid)).status == status and p, timeout=timeout,
                      what=f"payment {pid} to reach {ppb.PaymentStatus.Name(status)}")


# --- GeneratePix end to end (sandbox) ----------------------------------------------------------------

def test_click_bind_generate_pay_purchase_once(srv, cl, db_url):
    pixel = pixel_id()
    bot = cl.bot("sandbox", pixel=pixel)
    slug = f"p-{unique_id()}"
    cl.track.UpsertSlug(tpb.UpsertSlugRequest(slug=tpb.Slug(slug=slug, mode=tpb.SLUG_MODE_REDIRECT, enabled=True,
                                                            strategy=tpb.SLUG_STRATEGY_ROUND_ROBIN,
                                                            bots=[tpb.SlugBot(bot_id=bot.id, enabled=True, weight=1)])), timeout=10)
    fbclid = "IwAR_pay_" + "x" * 20
    status, hdrs, _ = http_request(srv.port, "GET", f"/go/{slug}?fbclid={fbclid}&utm_source=fb&utm_campaign=camp",
                                   {"User-Agent": UA, "Host": "go.example.test"})
    assert status == 302
    loc = next(v for k, v in hdrs if k == "location")
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)["start"][0]
    user = unique_id()
    cl.track.BindStart(tpb.BindStartRequest(bot_id=bot.id, telegram_user_id=user, start_param=token, chat_id=user), timeout=5)

    p = cl.generate(bot.id, user, 1990, email="ana@example.com", document="123.456.789-09")
    assert p.status == S.PAYMENT_STATUS_PENDING and p.reference == f"PAY-{p.id}" and p.pix_code.startswith("000201")
    # The answer is the row as committed after the outcome, updated_at included.
    assert p.updated_at_unix_ms == cl.pay.GetPayment(ppb.GetPaymentRequest(id=p.id), timeout=5).updated_at_unix_ms
    assert p.tracking_token == token and p.token_source == tpb.TOKEN_SOURCE_BOT_USER and p.gateway_transaction_id
    assert psql(f"SELECT fbclid || '|' || utm_source || '|' || utm_campaign FROM payments WHERE id = {p.id}", db_url) == f"{fbclid}|fb|camp"
    assert [h[1] for h in history(db_url, p.id)] == ["pending_verification", "pending"]

    for _ in range(2):  # the duplicate is harmless
        code, _ = webhook(srv.port, "sandbox", {"action": "pay", "transaction_id": p.gateway_transaction_id})
        assert code == 200
    paid = wait_status(cl, p.id, S.PAYMENT_STATUS_PAID)
    assert paid.paid_at_unix_ms > 0
    time.sleep(0.5)
    # A later duplicate changes nothing, not even updated_at.
    processed = lambda: psql(f"SELECT count(*) FROM webhook_inbox WHERE payment_id = {p.id} AND status = 'processed'", db_url)
    wait_until(lambda: processed() == "2", timeout=10, what="both webhooks processed")
    before = cl.pay.GetPayment(ppb.GetPaymentRequest(id=p.id), timeout=5).updated_at_unix_ms
    webhook(srv.port, "sandbox", {"action": "pay", "transaction_id": p.gateway_transaction_id})
    wait_until(lambda: processed() == "3", timeout=10, what="the late duplicate processed")
    assert cl.pay.GetPayment(ppb.GetPaymentRequest(id=p.id), timeout=5).updated_at_unix_ms == before
    events = purchases(db_url, p.id)
    assert len(events) == 1, events
    ev = events[0]
    assert ev["event_id"] == f"purchase_{p.id}" and ev["custom_data"]["currency"] == "BRL" and ev["custom_data"]["value"] == 19.9
    assert abs(ev["event_time"] - paid.paid_at_unix_ms // 1000) <= 1
    ud = ev["user_data"]
    assert ud["external_id"] == [hashlib.sha256(fbclid.encode()).hexdigest(), hashlib.sha256(str(user).encode()).hexdigest()]
    assert ud["client_user_agent"] == UA and ud["fbp"].startswith("fb.1.") and ud["client_ip_address"] == "127.0.0.1"
    assert ev["event_source_url"].startswith("http://go.example.test/go/")
    assert [h[1] for h in history(db_url, p.id)] == ["pending_verification", "pending", "paid"]
    # Refund after payment: a status, not "pending"; still one Purchase.
    webhook(srv.port, "sandbox", {"action": "refund", "transaction_id": p.gateway_transaction_id})
    wait_status(cl, p.id, S.PAYMENT_STATUS_REFUNDED)
    assert len(purchases(db_url, p.id)) == 1
    # GetPayment by reference and by transaction id.
    assert cl.pay.GetPayment(ppb.GetPaymentRequest(reference=p.reference), timeout=5).id == p.id
    assert cl.pay.GetPayment(ppb.GetPaymentRequest(gateway_transaction_id=p.gateway_transaction_id, gateway="sandbox"), timeout=5).id == p.id


@pytest.mark.parametrize("cents,status,unknown", [
    (1091, S.PAYMENT_STATUS_FAILED, False),               # declined
    (1095, S.PAYMENT_STATUS_FAILED, False),               # request never sent
    (1092, S.PAYMENT_STATUS_PENDING_VERIFICATION, True),  # timeout
    (1093, S.PAYMENT_STATUS_PENDING_VERIFICATION, True),  # garbled body
    (1097, S.PAYMENT_STATUS_PENDING_VERIFICATION, True),  # bad pix code
    (1094, S.PAYMENT_STATUS_PENDING_VERIFICATION, True),  # NULL result
])
def test_gateway_outcomes_and_reconciler_by_reference(srv, cl, db_url, cents, status, unknown):
    bot = cl.bot("sandbox")
    p = cl.generate(bot.id, unique_id(), cents)
    assert p.status == status, p
    assert p.token_source == tpb.TOKEN_SOURCE_NONE and p.tracking_token == ""
    if unknown:
        assert p.pix_code == ""
        # The sandbox recorded the charge: the reconciler finds it by reference PAY-{id}.
        q = wait_status(cl, p.id, S.PAYMENT_STATUS_PENDING, timeout=15)
        assert q.gateway_transaction_id and history(db_url, p.id)[-1][2] == "reconciler"


def test_validation_writes_nothing(srv, cl, db_url):
    bot = cl.bot("sandbox")
    nogw = cl.bot("")
    before = psql("SELECT count(*) FROM payments", db_url)
    cases = [((bot.id, 1, 0), {}, grpc.StatusCode.INVALID_ARGUMENT),
             ((bot.id, 1, -5), {}, grpc.StatusCode.INVALID_ARGUMENT),
             ((bot.id, 1, 10_000_001), {}, grpc.StatusCode.INVALID_ARGUMENT),
             ((unique_id(), 1, 100), {}, grpc.StatusCode.INVALID_ARGUMENT),
             ((nogw.id, 1, 100), {}, grpc.StatusCode.FAILED_PRECONDITION),
             ((bot.id, 1, 100), {"email": "not-an-email"}, grpc.StatusCode.INVALID_ARGUMENT),
             ((bot.id, 1, 100), {"document": "12345"}, grpc.StatusCode.INVALID_ARGUMENT)]
    for args, customer, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            cl.generate(*args, **customer)
        assert e.value.code() == code, (args, customer, e.value.details())
    assert psql("SELECT count(*) FROM payments", db_url) == before


def test_idempotency_key(srv, cl):
    bot = cl.bot("sandbox")
    user = unique_id()
    a = cl.generate(bot.id, user, 500, key="order-1")
    b = cl.generate(bot.id, user, 500, key="order-1")
    assert a.id == b.id and a.pix_code == b.pix_code
    with pytest.raises(grpc.RpcError) as e:
        cl.generate(bot.id, user, 600, key="order-1")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_same_user_buys_twice(srv, cl):
    bot = cl.bot("sandbox")
    user = unique_id()
    a, b = cl.generate(bot.id, user, 700), cl.generate(bot.id, user, 700)
    assert a.id != b.id and a.gateway_transaction_id != b.gateway_transaction_id and a.pix_code != b.pix_code
    for p in (a, b):
        webhook(srv.port, "sandbox", {"action": "pay", "reference": p.reference})
    for p in (a, b):
        wait_status(cl, p.id, S.PAYMENT_STATUS_PAID)


def test_wrong_secret_404_nothing_stored(srv, cl, db_url):
    before = psql("SELECT count(*) FROM webhook_inbox", db_url)
    for gw, secret in (("sandbox", "wrong"), ("nosuch", "x"), ("paradise", SECRETS["sandbox"])):
        code, _ = webhook(srv.port, gw, {"action": "pay"}, secret=secret)
        assert code == 404
    assert psql("SELECT count(*) FROM webhook_inbox", db_url) == before


def test_handle_webhook_rpc_processes_inline_once(srv, cl, db_url):
    """PaymentService/HandleWebhook: the same inbox as the HTTP route, processed in the call
    and recorded as its one attempt (the background worker does not take it a second time)."""
    bot = cl.bot("sandbox")
    p = cl.generate(bot.id, unique_id(), 2590)
    body = json.dumps({"action": "pay", "transaction_id": p.gateway_transaction_id}).encode()
    req = ppb.HandleWebhookRequest(gateway="sandbox", secret=SECRETS["sandbox"], body=body, remote_addr="198.51.100.7",
                                   headers=[gpb.Header(name="content-type", value="application/json")])
    r = cl.pay.HandleWebhook(req, timeout=10)
    assert r.accepted and r.inbox_id > 0 and r.payment_id == p.id and r.status == S.PAYMENT_STATUS_PAID, r
    assert cl.pay.GetPayment(ppb.GetPaymentRequest(id=p.id), timeout=5).status == S.PAYMENT_STATUS_PAID
    time.sleep(0.5)  # ten background polls
    row = psql(f"SELECT status || '|' || attempts || '|' || payment_id || '|' || remote_addr FROM webhook_inbox WHERE id = {r.inbox_id}", db_url)
    assert row == f"processed|1|{p.id}|198.51.100.7", row
    assert [h[1] for h in history(db_url, p.id)] == ["pending_verification", "pending", "paid"]
    # Unmatched: kept (status unmatched, retried later), answered with the reason.
    miss = cl.pay.HandleWebhook(ppb.HandleWebhookRequest(gateway="sandbox", secret=SECRETS["sandbox"],
                                                         body=b'{"action": "pay", "transaction_id": "sbx-nope"}'), timeout=10)
    assert miss.accepted and miss.payment_id == 0 and "sbx-nope" in miss.message, miss
    # Wrong secret: NOT_FOUND and nothing stored.
    before = psql("SELECT count(*) FROM webhook_inbox", db_url)
    with pytest.raises(grpc.RpcError) as e:
        cl.pay.HandleWebhook(ppb.HandleWebhookRequest(gateway="sandbox", secret="wrong", body=body), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert psql("SELECT count(*) FROM webhook_inbox", db_url) == before


def test_unknown_payment_webhook_kept_retried_parked(srv, cl, db_url):
    cl.bot("sandbox")
    code, body = webhook(srv.port, "sandbox", {"action": "pay", "transaction_id": "sbx-never-issued"})
    assert code == 200
    inbox_id = int(body.decode().split('"id":')[1].rstrip("}"))
    wait_until(lambda: psql(f"SELECT status FROM webhook_inbox WHERE id = {inbox_id}", db_url) == "parked", timeout=15,
               what="the unmatched webhook to be parked")
    assert int(psql(f"SELECT attempts FROM webhook_inbox WHERE id = {inbox_id}", db_url)) == 3
    wait_until(lambda: metric(srv.port, 'pixtrack_webhooks{status="parked"}') >= 1, timeout=10, what="parked gauge")


def test_amount_mismatch_flags_not_paid(srv, cl, db_url):
    bot = cl.bot("sandbox", pixel=pixel_id())
    p = cl.generate(bot.id, unique_id(), 1500)
    psql(f"UPDATE payments SET amount_cents = 1400 WHERE id = {p.id}", db_url)  # the gateway now disagrees
    webhook(srv.port, "sandbox", {"action": "pay", "transaction_id": p.gateway_transaction_id})
    q = wait_until(lambda: (x := cl.get(p.id)).flagged_for_review and x, what="the flag")
    assert q.status == S.PAYMENT_STATUS_PENDING and "1500" in q.review_reason and purchases(db_url, p.id) == []
    flagged = cl.pay.ListPayments(ppb.ListPaymentsRequest(bot_id=bot.id, review=ppb.REVIEW_FILTER_FLAGGED), timeout=5)
    assert [x.id for x in flagged.payments] == [p.id]


def test_list_payments_filters_and_pages(srv, cl):
    bot = cl.bot("sandbox")
    ids = [cl.generate(bot.id, unique_id(), 300 + i).id for i in range(5)]
    seen, token = [], ""
    while True:
        r = cl.pay.ListPayments(ppb.ListPaymentsRequest(bot_id=bot.id, page_size=2, page_token=token,
                                                        statuses=[S.PAYMENT_STATUS_PENDING]), timeout=5)
        seen += [p.id for p in r.payments]
        token = r.next_page_token
        if not token:
            break
    assert seen == sorted(ids, reverse=True)
    gws = cl.pay.ListGateways(ppb.ListGatewaysRequest(), timeout=5).gateways
    assert {"sandbox", "paradise"} <= {g.name for g in gws if g.loaded}


# --- fake gateways -------------------------------------------------------------------------------------

def test_forged_webhook_stays_unpaid(srv, cl, fakes, db_url):
    bot = cl.paradise_bot(fakes, pixel=pixel_id())
    p = cl.generate(bot.id, unique_id(), 2500)
    assert p.status == S.PAYMENT_STATUS_PENDING and p.gateway_transaction_id.startswith("pdx")
    body = {"transaction_id": p.gateway_transaction_id, "external_id": p.reference, "status": "approved", "amount": 2500}
    assert webhook(srv.port, "paradise", body)[0] == 200
    wait_until(lambda: psql(f"SELECT count(*) FROM webhook_inbox WHERE payment_id = {p.id} AND status = 'processed'", db_url) == "1",
               what="the forged webhook to be processed")
    assert cl.get(p.id).status == S.PAYMENT_STATUS_PENDING and purchases(db_url, p.id) == []
    # The real one: the gateway now says paid.
    fakes.call("/_control/webhook", {"gateway": "paradise", "id": p.gateway_transaction_id, "status": "paid",
                                     "url": f"http://127.0.0.1:{srv.port}/webhooks/paradise/{SECRETS['paradise']}"})
    wait_status(cl, p.id, S.PAYMENT_STATUS_PAID)
    assert len(purchases(db_url, p.id)) == 1


def test_webhook_before_generate_returns(srv, cl, fakes, db_url):
    bot = cl.paradise_bot(fakes, pixel=pixel_id())
    fakes.fault(gateway="paradise", op="create", kind="timeout", hang_ms=1000)  # charge made, answer lost
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("p", cl.generate(bot.id, unique_id(), 3300)))
    t.start()
    charge = wait_until(lambda: [c for c in fakes.ledger("paradise") if c["amount_cents"] == 3300], what="the charge")[0]
    fakes.call("/_control/webhook", {"gateway": "paradise", "id": charge["id"], "status": "paid",
                                     "url": f"http://127.0.0.1:{srv.port}/webhooks/paradise/{SECRETS['paradise']}"})
    t.join(20)
    pid = int(charge["reference"].split("-")[1])
    p = wait_status(cl, pid, S.PAYMENT_STATUS_PAID)
    assert p.gateway_transaction_id == charge["id"] and len(purchases(db_url, pid)) == 1


def test_redis_down_payment_still_created(meta, db_url):
    env = payment_env(db_url, meta, REDIS_URL="redis://127.0.0.1:1/0", PIXTRACK_META_SENDER="0", PIXTRACK_PAYMENT_WORKERS="0")
    with support.start_server(env=env, name="pixtrackd (no redis)") as s:
        c = Client(s.port)
        bot = c.bot("sandbox")
        p = c.generate(bot.id, unique_id(), 800)
        assert p.status == S.PAYMENT_STATUS_PENDING and p.token_source == tpb.TOKEN_SOURCE_NONE
        c.close()


def test_postgres_down_unavailable_gateway_not_called(meta, fakes, db_url):
    pg_port = urllib.parse.urlsplit(db_url).port
    proxy = TCPProxy(pg_port)
    proxied = db_url.replace(f":{pg_port}/", f":{proxy.port}/")
    env = payment_env(proxied, meta, PIXTRACK_META_SENDER="0", PIXTRACK_PAYMENT_WORKERS="0")
    with support.start_server(env=env, name="pixtrackd (postgres cut)") as s:
        c = Client(s.port)
        bot = c.paradise_bot(fakes)
        sent = len(fakes.requests("paradise"))
        proxy.close()
        with pytest.raises(grpc.RpcError) as e:
            c.generate(bot.id, unique_id(), 900)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(fakes.requests("paradise")) == sent
        c.close()


# --- several instances, and the crash test ----------------------------------------------------------

def test_two_instances_reconcile_backlog_once(meta, db_url):
    db2 = new_schema()
    gw = FakeGateways()
    try:
        with support.start_server(env=payment_env(db2, meta, PIXTRACK_META_SENDER="0", PIXTRACK_PAYMENT_WORKERS="0"),
                                  name="pixtrackd (backlog maker)") as s0:
            c = Client(s0.port)
            bot = c.paradise_bot(gw, pixel=pixel_id())
            made = [c.generate(bot.id, unique_id(), 1000 + i) for i in range(30)]
            c.close()
        assert all(p.status == S.PAYMENT_STATUS_PENDING for p in made)
        for p in made:
            gw.call("/_control/status", {"gateway": "paradise", "id": p.gateway_transaction_id, "status": "paid"})
        before = len(gw.requests("paradise"))
        # Slow status answers keep the first instance busy long enough for the second to share the backlog.
        gw.fault(gateway="paradise", op="status", kind="latency", latency_ms=150, times=30)
        env = payment_env(db2, meta, PIXTRACK_META_SENDER="0", PIXTRACK_RECONCILE_INTERVAL_MS="20",
                          PIXTRACK_RECONCILE_BATCH="3", PIXTRACK_RECONCILE_BACKOFF_MS="2000")
        with support.start_server(env=env, name="pixtrackd (reconciler A)") as a, \
                support.start_server(env=env, name="pixtrackd (reconciler B)") as b:
            wait_until(lambda: psql("SELECT count(*) FROM payments WHERE status = 'paid'", db2) == "30", timeout=30,
                       what="the backlog to be reconciled")
            time.sleep(0.5)
            by_a = a.log().count("event=payment_status_changed")
            by_b = b.log().count("event=payment_status_changed")
        checks = [r for r in gw.requests("paradise")[before:] if r["path"].endswith("check_status.php")]
        per_tx = {}
        for r in checks:
            per_tx[r["query"]["hash"]] = per_tx.get(r["query"]["hash"], 0) + 1
        support.figure(f"two reconcilers: A changed {by_a}, B changed {by_b}, status calls {len(checks)} for 30 payments")
        assert by_a + by_b == 30 and sorted(per_tx.values()) == [1] * 30
        assert psql("SELECT count(*) FROM payment_status_history WHERE source = 'reconciler' AND to_status = 'paid'", db2) == "30"
        assert psql("SELECT count(*) FROM meta_events WHERE event_name = 'Purchase'", db2) == "30"
    finally:
        gw.stop()


def children(pid: int) -> list[int]:
    """The child processes of `pid`, from each of its threads (a thread may end meanwhile)."""
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
        except FileNotFoundError:
            pass
    return out


def test_crash_no_orphan_pix(meta):
    """200 concurrent GeneratePix against a slow gateway, SIGKILL mid-way, restart, webhooks and
    reconciler: every charge the gateway made maps to exactly one payment."""
    db3 = new_schema()
    gw = FakeGateways()
    n = 200
    try:
        # All 200 calls in flight at the kill (the per-plugin quota, 64 by default, would fail the rest fast).
        env = payment_env(db3, meta, PIXTRACK_META_SENDER="0", PIXTRACK_GATEWAY_TIMEOUT_MS="3000",
                          PIXTRACK_PG_POOL_SIZE="20", PIXTRACK_RECONCILE_MAX_CHECKS="3", PIXTRACK_PLUGIN_MAX_IN_FLIGHT="256")
        s = support.start_server(env=env, name="pixtrackd (crash victim)")
        c = Client(s.port)
        bot = c.paradise_bot(gw, pixel=pixel_id())
        gw.fault(gateway="paradise", op="create", kind="latency", latency_ms=1500, times=n // 2)
        futures = [c.pay.GeneratePix.future(ppb.GeneratePixRequest(bot_id=bot.id, telegram_user_id=unique_id(),
                                                                   amount_cents=2000 + i), timeout=30) for i in range(n)]
        time.sleep(0.8)
        # The plugins run in runner processes (the default), which must end with their host.
        assert {g.name: g.isolation for g in c.pay.ListGateways(ppb.ListGatewaysRequest(), timeout=10).gateways}["paradise"] == "runner"
        runners = children(s.proc.pid)
        assert runners, "no plugin runner processes"
        s.signal(signal.SIGKILL)
        s.wait(10)
        wait_until(lambda: not any(os.path.exists(f"/proc/{r}") and open(f"/proc/{r}/stat").read().split()[2] != "Z"
                                   for r in runners), timeout=10, what="the runners to end with their killed host")
        answered = sum(1 for f in futures if f.done() and f.exception() is None)
        c.close()
        time.sleep(2.5)  # the slow charges finish at the gateway; their answers are lost
        s2 = support.start_server(env=env, name="pixtrackd (restarted)")
        try:
            ledger = gw.ledger("paradise")
            url = f"http://127.0.0.1:{s2.port}/webhooks/paradise/{SECRETS['paradise']}"
            for ch in ledger:  # half paid, the rest notify "waiting payment"
                gw.call("/_control/webhook", {"gateway": "paradise", "id": ch["id"], "url": url,
                                              "status": "paid" if ch["seq"] % 2 == 0 else "pending"})
            wait_until(lambda: psql("SELECT count(*) FROM payments WHERE status = 'pending_verification'", db3) == "0",
                       timeout=40, what="no payment left in pending_verification")
            wait_until(lambda: psql("SELECT count(*) FROM webhook_inbox WHERE status IN ('new', 'unmatched', 'retry')", db3) == "0",
                       timeout=20, what="every webhook processed")
            rows = psql("SELECT id, status, coalesce(gateway_transaction_id, ''), flagged FROM payments", db3).splitlines()
            payments = {int(r.split("|")[0]): r.split("|") for r in rows}
            by_ref = {f"PAY-{pid}": v for pid, v in payments.items()}
            mapped = 0
            for ch in ledger:
                assert ch["reference"] in by_ref, f"orphan charge {ch}"
                assert by_ref[ch["reference"]][2] == ch["id"], (ch, by_ref[ch["reference"]])
                mapped += 1
            txids = [v[2] for v in payments.values() if v[2]]
            assert len(txids) == len(set(txids)) == len(ledger)
            paid = [pid for pid, v in payments.items() if v[1] == "paid"]
            for pid in paid:
                assert psql(f"SELECT count(*) FROM meta_events WHERE event_id = 'purchase_{pid}'", db3) == "1"
            statuses = psql("SELECT status || '=' || count(*) FROM payments GROUP BY status ORDER BY 1", db3).replace("\n", " ")
            flagged = sum(1 for v in payments.values() if v[3] == "t")
            support.figure(f"crash test: {n} GeneratePix, {answered} answered before SIGKILL, {len(payments)} payment rows, "
                           f"{len(ledger)} charges in the fake's ledger, {mapped} mapped to exactly one payment (same reference "
                           f"and transaction id), 0 pending_verification, {len(paid)} paid with exactly one Purchase each, "
                           f"{flagged} flagged; statuses: {statuses}")
        finally:
            support.stop_and_check(s2)
    finally:
        gw.stop()
