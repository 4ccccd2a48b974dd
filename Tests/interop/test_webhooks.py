"""Webhooks as the gateways really send them, and honest statuses when an answer is lost.

Every recorded webhook shape of ÁtomoPay, Paradise, UmbrellaPag and SyncPay (the fake gateways
post them in each gateway's wire format) settles its payment exactly once; a refund next to
`status: paid` is a refund; a body no plugin can read is answered 400 and kept for the audit; a
gateway that is down while a webhook's status is checked is asked again later; a status answer
naming another reference binds nothing; a charge whose create answer was lost ends
`unresolved` (never `failed`) and an operator settles it with ResolvePayment; and a SIGKILL
between a Purchase POST and the record of Meta's answer never sends that Purchase twice."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest

import support
from payments_support import SECRETS, Client, FakeGateways, history, payment_env, purchases, webhook
from tracking_support import http_request, new_schema, pixel_id, psql, unique_id, wait_until

from pixtrack.v1 import payment_pb2 as ppb, tracking_pb2 as tpb

S = ppb
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
CLI = Path(os.environ.get("PIXTRACK_CLI", Path(support.pixtrackd_path()).parent / "pixtrack"))
# Status word that means "paid" in each fake gateway's ledger (what its status API answers).
PAID_WORD = {"atomopay": "paid", "paradise": "paid", "umbrellapag": "PAID", "syncpay": "completed"}


@pytest.fixture(scope="module")
def srv(meta, db_url):
    # Postback URLs (with the webhook secrets) go to the gateways; the fakes only record them.
    s = support.start_server(env=payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_WEBHOOK_BASE_URL="https://pix.example.test"),
                             name="pixtrackd (webhooks)")
    yield s
    support.stop_and_check(s)
    log = s.log()
    for secret in SECRETS.values():
        assert secret not in log, "a webhook secret appeared in the log"
    assert "atomo-token" not in log and "umbrella-key" not in log and "sync-secret" not in log


@pytest.fixture(scope="module")
def cl(srv):
    c = Client(srv.port)
    yield c
    c.close()


def hook_url(server, gateway: str) -> str:
    return f"http://127.0.0.1:{server.port}/webhooks/{gateway}/{SECRETS[gateway]}"


def wait_status(cl, pid, status, timeout=15.0):
    return wait_until(lambda: (p := cl.get(pid)).status == status and p, timeout=timeout,
                      what=f"payment {pid} to reach {ppb.PaymentStatus.Name(status)}")


def inbox(db_url, pid) -> list[str]:
    out = psql(f"SELECT status || '|' || attempts FROM webhook_inbox WHERE payment_id = {pid} ORDER BY id", db_url)
    return [line for line in out.splitlines() if line]


# --- every recorded shape ---------------------------------------------------------------------------

SHAPES = [("atomopay", s, S.PAYMENT_STATUS_PAID) for s in
          ("id_hash", "hash_status", "id_payment_status", "wrapped_data", "wrapped_transaction", "wrapped_payload",
           "success_data")]
SHAPES += [("paradise", s, S.PAYMENT_STATUS_PAID) for s in ("new", "old")]
SHAPES += [("umbrellapag", s, S.PAYMENT_STATUS_PAID) for s in ("default", "data_data", "metadata_object")]
SHAPES += [("umbrellapag", "refunded_paid", S.PAYMENT_STATUS_REFUNDED)]
SHAPES += [("syncpay", s, S.PAYMENT_STATUS_PAID) for s in ("default", "lowercase_ref", "string_amount")]


def test_the_fake_posts_every_shape_these_tests_name(fakes):
    listed = fakes.call("/_control/shapes")
    for gateway, shape, _ in SHAPES:
        assert shape in listed.get(gateway, []), (gateway, shape, listed)


@pytest.mark.parametrize("gateway,shape,expected", SHAPES, ids=[f"{g}-{s}" for g, s, _ in SHAPES])
def test_first_webhook_of_any_shape_settles_the_payment_once(srv, cl, fakes, db_url, gateway, shape, expected):
    bot = cl.gateway_bot(fakes, gateway, pixel=pixel_id())
    p = cl.generate(bot.id, unique_id(), 3380)  # R$ 33,80: SyncPay sends it as the JSON number 33.8
    assert p.status == S.PAYMENT_STATUS_PENDING and p.gateway_transaction_id, p
    sent = {"gateway": gateway, "id": p.gateway_transaction_id, "status": PAID_WORD[gateway], "shape": shape,
            "url": hook_url(srv, gateway)}
    r = fakes.call("/_control/webhook", sent)
    assert r.get("delivered") and r.get("status") == 200, r
    q = wait_status(cl, p.id, expected)
    assert q.gateway_transaction_id == p.gateway_transaction_id and not q.flagged_for_review, q
    name = ppb.PaymentStatus.Name(expected).removeprefix("PAYMENT_STATUS_").lower()
    assert [h[1] for h in history(db_url, p.id)].count(name) == 1
    assert len(purchases(db_url, p.id)) == (1 if expected == S.PAYMENT_STATUS_PAID else 0)
    wait_until(lambda: inbox(db_url, p.id) == ["processed|1"], what="the webhook recorded as processed, first attempt")
    # The gateway delivers it again: nothing changes, no second Purchase.
    assert fakes.call("/_control/webhook", sent).get("status") == 200
    wait_until(lambda: len(inbox(db_url, p.id)) == 2 and all(x.startswith("processed") for x in inbox(db_url, p.id)),
               what="the duplicate processed")
    assert [h[1] for h in history(db_url, p.id)].count(name) == 1
    assert len(purchases(db_url, p.id)) == (1 if expected == S.PAYMENT_STATUS_PAID else 0)


# --- bodies no plugin can read ------------------------------------------------------------------------

@pytest.mark.parametrize("gateway", ["atomopay", "paradise", "umbrellapag", "syncpay"])
def test_a_body_that_is_not_json_is_400_and_kept(srv, cl, fakes, db_url, gateway):
    cl.gateway_bot(fakes, gateway)  # the gateway has an account, so its plugin can be asked
    before = int(psql(f"SELECT count(*) FROM webhook_inbox WHERE gateway = '{gateway}'", db_url))
    code, body = webhook(srv.port, gateway, b"<html>not json</html>")
    assert code == 400, (code, body)
    assert b"not a JSON object" in body, body
    row = psql(f"SELECT status || '|' || result FROM webhook_inbox WHERE gateway = '{gateway}' ORDER BY id DESC LIMIT 1", db_url)
    assert row.startswith("rejected|rejected: webhook body is not a JSON object"), row
    assert int(psql(f"SELECT count(*) FROM webhook_inbox WHERE gateway = '{gateway}'", db_url)) == before + 1
    time.sleep(0.5)  # ten background polls: a rejected body is not retried
    again = psql(f"SELECT status || '|' || attempts FROM webhook_inbox WHERE gateway = '{gateway}' ORDER BY id DESC LIMIT 1", db_url)
    assert again.startswith("rejected|"), again


def test_handle_webhook_rpc_rejects_an_unreadable_body(srv, cl, fakes, db_url):
    cl.gateway_bot(fakes, "paradise")
    with pytest.raises(grpc.RpcError) as e:
        cl.pay.HandleWebhook(ppb.HandleWebhookRequest(gateway="paradise", secret=SECRETS["paradise"], body=b"\x00\xffnope"),
                             timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "JSON" in e.value.details()


# --- the gateway is down while a webhook is checked --------------------------------------------------

def test_gateway_down_during_the_status_check_is_retried_then_paid(meta):
    db = new_schema()
    fakes = FakeGateways()  # its own: PAY-n references repeat across databases
    # The reconciler stays out of the way (its first pass runs before the payment exists).
    env = payment_env(db, meta, PIXTRACK_META_SENDER="0", PIXTRACK_RECONCILE_INTERVAL_MS="600000",
                      PIXTRACK_WEBHOOK_MAX_ATTEMPTS="5", PIXTRACK_WEBHOOK_RETRY_MS="200")
    with support.start_server(env=env, name="pixtrackd (status check retried)") as s:
        c = Client(s.port)
        try:
            bot = c.gateway_bot(fakes, "paradise", pixel=pixel_id())
            p = c.generate(bot.id, unique_id(), 4100)
            assert p.status == S.PAYMENT_STATUS_PENDING
            before = len(fakes.requests("paradise"))
            fakes.fault(gateway="paradise", op="status", kind="http5xx", status=503, times=2)
            r = fakes.call("/_control/webhook", {"gateway": "paradise", "id": p.gateway_transaction_id, "status": "paid",
                                                 "url": hook_url(s, "paradise")})
            assert r.get("status") == 200, r
            wait_until(lambda: inbox(db, p.id) and inbox(db, p.id)[0].startswith("retry"), what="the webhook waiting to retry")
            assert c.get(p.id).status == S.PAYMENT_STATUS_PENDING
            wait_status(c, p.id, S.PAYMENT_STATUS_PAID)
            assert inbox(db, p.id) == ["processed|3"], inbox(db, p.id)
            checks = [x for x in fakes.requests("paradise")[before:] if x["path"].endswith("check_status.php")]
            assert len(checks) == 3
            assert len(purchases(db, p.id)) == 1
        finally:
            c.close()
            fakes.stop()


# --- a status answer that names another charge ----------------------------------------------------------

def test_a_status_answer_for_another_reference_binds_nothing(srv, cl, fakes, db_url):
    bot = cl.gateway_bot(fakes, "paradise")
    fakes.fault(gateway="paradise", op="create", kind="timeout", hang_ms=2500)  # charge made, answer lost
    amount = 5000 + unique_id() % 1000
    p = cl.generate(bot.id, unique_id(), amount)
    assert p.status == S.PAYMENT_STATUS_PENDING_VERIFICATION and not p.gateway_transaction_id
    charge = wait_until(lambda: [x for x in fakes.ledger("paradise") if x["reference"] == p.reference
                                 and x["amount_cents"] == amount], what="the charge")[0]
    # The gateway's status answer says this transaction is someone else's.
    fakes.call("/_control/status", {"gateway": "paradise", "id": charge["id"], "status": "paid", "reference_override": "PAY-999999"})
    body = {"transaction_id": charge["id"], "external_id": p.reference, "status": "approved", "amount": amount}
    assert webhook(srv.port, "paradise", body)[0] == 200
    wait_until(lambda: any("PAY-999999" in h for h in psql(
        f"SELECT detail FROM payment_status_history WHERE payment_id = {p.id}", db_url).splitlines()), what="the flag")
    q = cl.get(p.id)
    assert q.gateway_transaction_id == "" and q.flagged_for_review and q.status != S.PAYMENT_STATUS_PAID, q
    assert purchases(db_url, p.id) == []


# --- a lost create answer: unresolved, then an operator -------------------------------------------------

def cli(*args, timeout=20):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXTRACK_")}
    r = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


def test_lost_answer_ends_unresolved_never_failed_and_resolve_settles_it(srv, cl, fakes, db_url):
    bot = cl.gateway_bot(fakes, "paradise", pixel=pixel_id())
    fakes.fault(gateway="paradise", op="create", kind="timeout", hang_ms=2500)  # charge made, answer lost
    amount = 6000 + unique_id() % 1000
    p = cl.generate(bot.id, unique_id(), amount)
    assert p.status == S.PAYMENT_STATUS_PENDING_VERIFICATION
    # Paradise cannot be asked by reference and no webhook comes: after the last check, unresolved.
    q = wait_status(cl, p.id, S.PAYMENT_STATUS_UNRESOLVED, timeout=30)
    assert q.flagged_for_review and "ResolvePayment" in q.review_reason and "reference" in q.review_reason, q
    assert "failed" not in [h[1] for h in history(db_url, p.id)]
    listed = cl.pay.ListPayments(ppb.ListPaymentsRequest(statuses=[S.PAYMENT_STATUS_UNRESOLVED], bot_id=bot.id), timeout=5)
    assert [x.id for x in listed.payments] == [p.id]
    # References are per database: other tests' payments have the same PAY-n at this fake.
    charge = [x for x in fakes.ledger("paradise") if x["reference"] == p.reference and x["amount_cents"] == amount][0]

    # Wrong ids bind nothing.
    with pytest.raises(grpc.RpcError) as e:
        cl.pay.ResolvePayment(ppb.ResolvePaymentRequest(reference=p.reference, gateway_transaction_id="pdx-no-such"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    for bad in (ppb.ResolvePaymentRequest(reference="PAY-x", gateway_transaction_id="a"),
                ppb.ResolvePaymentRequest(reference=p.reference, gateway_transaction_id="")):
        with pytest.raises(grpc.RpcError) as e:
            cl.pay.ResolvePayment(bad, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cl.get(p.id).status == S.PAYMENT_STATUS_UNRESOLVED and cl.get(p.id).gateway_transaction_id == ""

    # The operator found the charge in the gateway's dashboard.
    rc, out, err = cli("payment", "resolve", p.reference, "--transaction-id", charge["id"], "--addr", f"{support.HOST}:{srv.port}")
    assert rc == 0, (rc, out, err)
    assert f"{p.reference}: unresolved -> pending" in out, out
    q = cl.get(p.id)
    assert q.status == S.PAYMENT_STATUS_PENDING and q.gateway_transaction_id == charge["id"] and not q.flagged_for_review, q
    # Settled like any other: the buyer pays, the webhook comes, one Purchase.
    fakes.call("/_control/webhook", {"gateway": "paradise", "id": charge["id"], "status": "paid", "url": hook_url(srv, "paradise")})
    wait_status(cl, p.id, S.PAYMENT_STATUS_PAID)
    assert len(purchases(db_url, p.id)) == 1
    # Nothing left to resolve.
    with pytest.raises(grpc.RpcError) as e:
        cl.pay.ResolvePayment(ppb.ResolvePaymentRequest(reference=p.reference, gateway_transaction_id=charge["id"]), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    rc, _, err = cli("payment", "resolve", p.reference, "--transaction-id", charge["id"], "--addr", f"{support.HOST}:{srv.port}")
    assert rc == 64 + 9 and "FAILED_PRECONDITION" in err, (rc, err)


def test_a_webhook_with_the_reference_settles_an_unresolved_payment(srv, cl, fakes, db_url):
    bot = cl.gateway_bot(fakes, "paradise", pixel=pixel_id())
    fakes.fault(gateway="paradise", op="create", kind="timeout", hang_ms=2500)
    amount = 7000 + unique_id() % 1000
    p = cl.generate(bot.id, unique_id(), amount)
    wait_status(cl, p.id, S.PAYMENT_STATUS_UNRESOLVED, timeout=30)
    charge = [x for x in fakes.ledger("paradise") if x["reference"] == p.reference and x["amount_cents"] == amount][0]
    fakes.call("/_control/webhook", {"gateway": "paradise", "id": charge["id"], "status": "paid", "url": hook_url(srv, "paradise")})
    q = wait_status(cl, p.id, S.PAYMENT_STATUS_PAID)
    assert q.gateway_transaction_id == charge["id"] and not q.flagged_for_review
    assert len(purchases(db_url, p.id)) == 1


# --- the Meta send window ---------------------------------------------------------------------------

def click_and_bind(c: Client, server, bot) -> int:
    """An ad click on a redirect slug of `bot` and the bot's /start: a buyer with tracking data
    (a Purchase needs the visitor's user agent). Returns the Telegram user id."""
    slug = f"w-{unique_id()}"
    c.track.UpsertSlug(tpb.UpsertSlugRequest(slug=tpb.Slug(slug=slug, mode=tpb.SLUG_MODE_REDIRECT, enabled=True,
                                                           strategy=tpb.SLUG_STRATEGY_ROUND_ROBIN,
                                                           bots=[tpb.SlugBot(bot_id=bot.id, enabled=True, weight=1)])), timeout=10)
    status, hdrs, _ = http_request(server.port, "GET", f"/go/{slug}?fbclid=IwAR_window_{unique_id()}",
                                   {"User-Agent": UA, "Host": "go.example.test"})
    assert status == 302
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(next(v for k, v in hdrs if k == "location")).query)["start"][0]
    user = unique_id()
    c.track.BindStart(tpb.BindStartRequest(bot_id=bot.id, telegram_user_id=user, start_param=token, chat_id=user), timeout=5)
    return user


def test_sigkill_between_the_purchase_post_and_its_record_never_sends_it_twice(meta, fakes):
    db = new_schema()
    pixel = pixel_id()
    # Lease = request timeout + 5 s at least: 8 s here.
    env = payment_env(db, meta, PIXTRACK_META_TIMEOUT_MS="3000", PIXTRACK_META_BATCH_SIZE="10",
                      PIXTRACK_META_SENDING_LEASE_MS="1000", PIXTRACK_META_POLL_MS="100")
    s = support.start_server(env=env, name="pixtrackd (meta crash victim)")
    try:
        c = Client(s.port)
        bot = c.bot("sandbox", pixel=pixel)
        user = click_and_bind(c, s, bot)
        wait_until(lambda: [e for e in meta.events() if e["pixel_id"] == pixel], timeout=15, what="the PageView delivered")
        # Meta records the Purchase, then takes 6 s to answer: the kill lands in between.
        meta.fault(kind="slow_answer", latency_ms=6000, pixel=pixel, times=1)
        p = c.generate(bot.id, user, 1990)
        code, _ = webhook(s.port, "sandbox", {"action": "pay", "transaction_id": p.gateway_transaction_id})
        assert code == 200
        event_id = f"purchase_{p.id}"
        wait_until(lambda: meta.events(event_id), timeout=15, what="the Purchase to reach Meta")
        s.signal(signal.SIGKILL)
        s.wait(10)
        c.close()
    finally:
        if s.proc.poll() is None:
            s.signal(signal.SIGKILL)
    assert psql(f"SELECT status FROM meta_events WHERE event_id = '{event_id}'", db) == "sending"
    s2 = support.start_server(env=env, name="pixtrackd (meta restarted)")
    try:
        wait_until(lambda: psql(f"SELECT status FROM meta_events WHERE event_id = '{event_id}'", db) == "parked",
                   timeout=30, what="the abandoned Purchase to be parked")
        err = psql(f"SELECT last_error FROM meta_events WHERE event_id = '{event_id}'", db)
        assert err.startswith("sent without an answer"), err
        time.sleep(1.0)  # ten sender polls
        assert len(meta.events(event_id)) == 1, "the Purchase was sent twice"
        support.figure(f"meta send window: Purchase in flight at SIGKILL, parked after restart, sent to Meta "
                       f"{len(meta.events(event_id))} time(s)")
    finally:
        support.stop_and_check(s2)


# --- guessing the secret ---------------------------------------------------------------------------

def post_from(source: str, port: int, path: str, body: bytes = b"{}"):
    conn = http.client.HTTPConnection(support.HOST, port, timeout=10, source_address=(source, 0))
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def test_wrong_secrets_are_throttled_per_client(srv, cl, db_url):
    """10 wrong secrets from one address within a minute: that address gets 429 (even with the
    right secret) until the minute is over; other addresses are not affected."""
    cl.bot("sandbox")
    guesser = "127.0.0.77"
    for i in range(10):
        status, _ = post_from(guesser, srv.port, f"/webhooks/sandbox/guess-{i:02d}-0123456789abcdef0123456789")
        assert status == 404
    before = int(psql("SELECT count(*) FROM webhook_inbox", db_url))
    status, body = post_from(guesser, srv.port, f"/webhooks/sandbox/{SECRETS['sandbox']}", b'{"action": "pay", "reference": "PAY-1"}')
    assert status == 429 and b"resource_exhausted" in body, (status, body)
    assert int(psql("SELECT count(*) FROM webhook_inbox", db_url)) == before, "a throttled request was stored"
    status, _ = post_from("127.0.0.78", srv.port, f"/webhooks/sandbox/{SECRETS['sandbox']}", b'{"action": "pay", "reference": "PAY-1"}')
    assert status == 200


def test_a_short_webhook_secret_is_refused_at_startup(meta):
    with pytest.raises(RuntimeError) as e:
        support.start_server(env=payment_env(new_schema(), meta, PIXTRACK_WEBHOOK_SECRETS="paradise:too-short-secret"),
                             name="pixtrackd (short secret)")
    assert "at least 32" in str(e.value) and "paradise" in str(e.value), str(e.value)[-600:]
    assert "too-short-secret" not in str(e.value).split("at least 32")[0][-200:], "the secret itself was printed"


def test_only_the_headers_that_describe_the_webhook_are_stored(srv, cl, db_url):
    cl.bot("sandbox")
    status, _, body = http_request(srv.port, "POST", f"/webhooks/sandbox/{SECRETS['sandbox']}",
                                   {"Content-Type": "application/json", "Authorization": "Bearer gateway-side-secret",
                                    "Cookie": "session=buyer-cookie", "event": "cashin.update"},
                                   b'{"action": "pay", "reference": "PAY-424242"}')
    assert status == 200, (status, body)
    inbox_id = int(body.decode().split('"id":')[1].rstrip("}"))
    stored = psql(f"SELECT headers::text FROM webhook_inbox WHERE id = {inbox_id}", db_url)
    assert "cashin.update" in stored and "application/json" in stored, stored
    assert "gateway-side-secret" not in stored and "buyer-cookie" not in stored, stored


def test_a_gateway_error_page_that_echoes_the_request_leaks_nothing(srv, cl, fakes, db_url):
    """ÁtomoPay's token travels in the URL; an error page quoting the request (URL and body, whose
    postback URL holds the webhook secret) ends in the plugin's message. Neither the token nor
    the secret reaches the database, the RPC answer or the log."""
    env_secret = SECRETS["atomopay"]
    bot = cl.gateway_bot(fakes, "atomopay")
    fakes.fault(gateway="atomopay", op="create", kind="echo_request", create_charge=False)
    p = cl.generate(bot.id, unique_id(), 2700)
    assert p.status == S.PAYMENT_STATUS_PENDING_VERIFICATION, p
    sent = fakes.requests("atomopay")[-1]
    assert sent["query"].get("api_token") == "atomo-token" and env_secret in sent["body"], "the token and secret did travel"
    stored = psql(f"SELECT gateway_message FROM payments WHERE id = {p.id}", db_url)
    answered = cl.get(p.id).gateway_message
    for text in (stored, answered, p.gateway_message, srv.log()):
        assert "atomo-token" not in text and env_secret not in text, text[-400:]
    assert "non-JSON" in stored and "***" in stored, stored
