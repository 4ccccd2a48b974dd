"""Payment events reach the bots (issue 13): WatchPayments across two instances on one database
(order, latency bound), cancel and resume (exactly the missed events), 1,000 events with slow and
stopped readers (bounded server memory, RESOURCE_EXHAUSTED cut-off, resume), the CLI's `watch`,
and signed outbound notifications (a receiver answering 500 first; a receiver that is down:
parked, then re-sent by `pixtrack notify requeue`)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import support
from payments_support import Client, payment_env, webhook
from tracking_support import metric, psql, wait_until

from pixtrack.v1 import payment_pb2 as ppb, tracking_pb2 as tpb

S = ppb
NOTIFY_SECRET = "notify-secret-0123456789abcdef0123456789"
LONG = "x" * 255  # larger events: 1,000 of them outgrow every window and buffer on the way


def rss_kib(server: support.Server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def pair(meta, db_url):
    """Two instances on one database; only the first runs the background workers."""
    env = payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_WATCH_HEARTBEAT_MS="500",
                      PIXTRACK_WATCH_STALL_MS="1500", PIXTRACK_NOTIFY_RETRY_MS="200", PIXTRACK_NOTIFY_MAX_RETRY_MS="400",
                      PIXTRACK_NOTIFY_MAX_ATTEMPTS="3", PIXTRACK_NOTIFY_TIMEOUT_MS="2000", PIXTRACK_NOTIFY_POLL_MS="50")
    one = support.start_server(env=env, name="pixtrackd (events 1)")
    two = support.start_server(env={**env, "PIXTRACK_PAYMENT_WORKERS": "0"}, name="pixtrackd (events 2)")
    yield one, two
    for s in (one, two):
        support.stop_and_check(s)
        assert NOTIFY_SECRET not in s.log(), "the notify secret appeared in the log"


@pytest.fixture(scope="module")
def clients(pair):
    c1, c2 = Client(pair[0].port), Client(pair[1].port)
    yield c1, c2
    c1.close()
    c2.close()


class Watch:
    """A WatchPayments stream read on a thread; events (heartbeats apart) with arrival times."""

    def __init__(self, client: Client, bot_id: int = 0, after: str = "", delay: float = 0.0):
        self.call = client.pay.WatchPayments(ppb.WatchPaymentsRequest(bot_id=bot_id, after_cursor=after))
        self.events: list[tuple[ppb.PaymentEvent, float]] = []
        self.heartbeats: list[ppb.PaymentEvent] = []
        self.error: grpc.RpcError | None = None
        self.delay = delay
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                if ev.HasField("payment"):
                    self.events.append((ev, time.time()))
                else:
                    self.heartbeats.append(ev)
                if self.delay:
                    time.sleep(self.delay)
        except grpc.RpcError as e:
            self.error = e

    def cursors(self) -> list[str]:
        return [e.cursor for e, _ in self.events]

    def cancel(self):
        self.call.cancel()
        self.thread.join(10)

    def last_cursor(self) -> str:
        return self.events[-1][0].cursor if self.events else ""


# The server's cursor text for a row: "<xid>.<id>", or the bare id for xid 0 (events written
# before migration 104). The log's order is (xid, id).
CURSOR_SQL = "CASE WHEN xid = '0'::xid8 THEN id::text ELSE xid::text || '.' || id::text END"


def cursor_key(cursor: str) -> tuple[int, int]:
    xid, _, eid = cursor.rpartition(".")
    return (int(xid) if xid else 0, int(eid))


def log_events(db_url: str, bot_id: int, after: str = "0") -> list[tuple[str, int, str]]:
    xid, eid = cursor_key(after)
    out = psql(f"SELECT {CURSOR_SQL}, payment_id, status FROM payment_events WHERE bot_id = {bot_id} "
               f"AND (xid, id) > ('{xid}'::xid8, {eid}) ORDER BY xid, id", db_url)
    return [(c, int(p), s) for c, p, s in (line.split("|") for line in out.splitlines() if line)]


def log_head(db_url: str) -> str:
    return psql(f"SELECT coalesce((SELECT {CURSOR_SQL} FROM payment_events ORDER BY xid DESC, id DESC LIMIT 1), '0')", db_url)


def pay(port: int, p: ppb.Payment):
    code, body = webhook(port, "sandbox", {"action": "pay", "transaction_id": p.gateway_transaction_id})
    assert code == 200, body


def test_events_committed_on_one_instance_reach_a_watcher_on_the_other_in_order_and_fast(pair, clients, db_url):
    one, two = pair
    c1, c2 = clients
    bot = c1.bot("sandbox")
    w = Watch(c2, bot.id)  # instance 2 runs no workers: it learns of events only through the table
    time.sleep(0.5)
    payments = []
    for i in range(10):
        p = c1.generate(bot.id, 1000 + i, 1990)
        assert p.status == S.PAYMENT_STATUS_PENDING
        pay(one.port, p)
        payments.append(p)
    for p in payments:
        wait_until(lambda: c1.get(p.id).status == S.PAYMENT_STATUS_PAID, what=f"{p.reference} paid")
    wait_until(lambda: len(w.events) >= 30, what="30 events on instance 2")
    time.sleep(0.3)
    got = [(e.cursor, e.payment.id, e.payment.status, e.previous_status) for e, _ in w.events]
    logged = log_events(db_url, bot.id)
    assert [g[0] for g in got] == [c for c, _, _ in logged], "the watcher's events differ from the log"
    assert [cursor_key(c) for c, *_ in got] == sorted(cursor_key(c) for c, *_ in got)
    for p in payments:
        mine = [(st, prev) for _, pid, st, prev in got if pid == p.id]
        assert mine == [(S.PAYMENT_STATUS_PENDING_VERIFICATION, S.PAYMENT_STATUS_UNSPECIFIED),
                        (S.PAYMENT_STATUS_PENDING, S.PAYMENT_STATUS_PENDING_VERIFICATION),
                        (S.PAYMENT_STATUS_PAID, S.PAYMENT_STATUS_PENDING)], mine
    # Latency: from the event's commit-time stamp (the database clock, same machine) to arrival.
    lat = sorted(max(0.0, arrived * 1000 - e.at_unix_ms) for e, arrived in w.events)
    p50, worst = lat[len(lat) // 2], lat[-1]
    support.figure(f"watch latency across instances: p50 {p50:.1f} ms, max {worst:.1f} ms over {len(lat)} events")
    assert worst < 1000, f"an event took {worst:.0f} ms to reach the other instance"
    assert metric(two.port, "pixtrack_payment_watches_open") == 1
    w.cancel()
    wait_until(lambda: metric(two.port, "pixtrack_payment_watches_open") == 0, what="the watch closed")


def test_cancel_and_resume_from_the_last_cursor_gets_exactly_the_missed_events(pair, clients, db_url):
    one, two = pair
    c1, c2 = clients
    bot = c1.bot("sandbox")
    w = Watch(c2, bot.id)
    time.sleep(0.3)
    first = [c1.generate(bot.id, 2000 + i, 500) for i in range(3)]
    wait_until(lambda: len(w.events) >= 6, what="6 events")
    w.cancel()
    last = w.last_cursor()
    missed = [c1.generate(bot.id, 2100 + i, 700) for i in range(3)]
    for p in missed:
        pay(one.port, p)
    for p in missed:
        wait_until(lambda: c1.get(p.id).status == S.PAYMENT_STATUS_PAID, what="paid")
    expected = [c for c, _, _ in log_events(db_url, bot.id, after=last)]
    assert len(expected) == 9
    r = Watch(c2, bot.id, after=last)
    wait_until(lambda: len(r.events) >= 9, what="the missed events")
    # Then live, with no duplicate at the switch.
    extra = c1.generate(bot.id, 2200, 900)
    wait_until(lambda: len(r.events) >= 11, what="live events after the replay")
    time.sleep(0.3)
    assert r.cursors() == expected + [c for c, _, _ in log_events(db_url, bot.id, after=expected[-1])]
    assert len(set(r.cursors())) == len(r.cursors()) == 11
    assert {e.payment.id for e, _ in r.events[9:]} == {extra.id}
    assert first[0].id not in {e.payment.id for e, _ in r.events}
    # Heartbeats carry the position; a bad cursor is refused.
    wait_until(lambda: r.heartbeats, what="a heartbeat", timeout=5)
    assert cursor_key(r.heartbeats[-1].cursor) >= cursor_key(r.cursors()[-1])
    r.cancel()
    with pytest.raises(grpc.RpcError) as e:
        next(iter(c2.pay.WatchPayments(ppb.WatchPaymentsRequest(after_cursor="not-a-cursor"), timeout=5)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Deadlines are honoured.
    with pytest.raises(grpc.RpcError) as e:
        for _ in c2.pay.WatchPayments(ppb.WatchPaymentsRequest(bot_id=bot.id), timeout=1):
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def make_events(client: Client, bot_id: int, payments: int) -> None:
    """2 events per payment (creation, pending), generated concurrently."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.pay.GeneratePix(ppb.GeneratePixRequest(
            bot_id=bot_id, telegram_user_id=5000 + i, amount_cents=100 + i, description=LONG), timeout=30), range(payments)))


def parse_messages(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 5:
        n = struct.unpack(">I", data[1:5])[0]
        if len(data) < 5 + n:
            break
        out.append(data[5:5 + n])
        data = data[5 + n:]
    return out


def test_1000_events_with_slow_and_stopped_readers_keep_server_memory_bounded(pair, clients, db_url):
    one, two = pair
    c1, c2 = clients
    bot = c1.bot("sandbox")
    start_cursor = log_head(db_url)
    rss_before = rss_kib(two)
    # A reader that never reads: a raw HTTP/2 client whose 64 KiB windows are never opened.
    raw = support.H2Client(two.port, timeout=10)
    req = ppb.WatchPaymentsRequest(bot_id=bot.id, after_cursor=start_cursor).SerializeToString()
    sid = raw.request("/pixtrack.v1.PaymentService/WatchPayments", support.grpc_message(req))
    slow = Watch(c2, bot.id, after=start_cursor, delay=0.003)
    make_events(c1, bot.id, 500)
    # A create that overran the gateway timeout is settled by the reconciler a little later.
    wait_until(lambda: len(log_events(db_url, bot.id, after=start_cursor)) >= 1000, timeout=30, what="1000 events")
    expected = [c for c, _, _ in log_events(db_url, bot.id, after=start_cursor)]
    assert len(expected) == 1000
    time.sleep(3)  # longer than PIXTRACK_WATCH_STALL_MS: the stopped reader is cut off
    rss_during = rss_kib(two)
    # Now read what the server had queued for it: a bounded prefix, then RESOURCE_EXHAUSTED.
    st = raw.wait(sid, timeout=15)
    raw.close()
    assert st.grpc_status == 8, st.describe()
    msgs = parse_messages(st.data)
    queued = len(st.data)
    support.figure(f"stopped watcher: {len(msgs)} of 1000 events ({queued // 1024} KiB) queued before the cut-off")
    assert 0 < len(msgs) < 1000 and queued <= 65535 + 256 * 1024 + 4096, queued
    cut = [ppb.PaymentEvent.FromString(m).cursor for m in msgs]
    assert cut == expected[:len(cut)]
    # It resumes from its last cursor and gets the rest, once each.
    resumed = Watch(c2, bot.id, after=cut[-1])
    wait_until(lambda: len(resumed.events) >= 1000 - len(cut), timeout=30, what="the rest after the cut-off")
    assert cut + resumed.cursors()[:1000 - len(cut)] == expected
    # The slow (but reading) watcher gets everything in order.
    wait_until(lambda: len(slow.events) >= 1000, timeout=60, what="the slow reader's 1000 events")
    assert slow.cursors()[:1000] == expected and slow.error is None
    growth = (rss_during - rss_before) / 1024
    support.figure(f"1,000 events, one slow and one stopped watcher: server RSS +{growth:.1f} MiB")
    assert growth < 64, f"server RSS grew {growth:.1f} MiB"
    assert metric(two.port, "pixtrack_payment_watches_cut_off") >= 1
    slow.cancel()
    resumed.cancel()


def test_cli_watch_prints_json_lines_and_resumes_after_a_restart(meta, db_url, tmp_path):
    env = payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_WATCH_HEARTBEAT_MS="500")
    port = support.free_port()
    srv = support.start_server("--port", str(port), env=env, name="pixtrackd (cli watch)")
    cl = Client(srv.port)
    bot = cl.bot("sandbox")
    cli = support.pixtrackd_path().parent / "pixtrack"
    out = open(tmp_path / "watch.out", "wb")
    proc = subprocess.Popen([str(cli), "watch", "--bot", str(bot.id), "--addr", f"127.0.0.1:{port}"], stdout=out,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        cl.generate(bot.id, 3000, 1000)
        lines = lambda: [json.loads(l) for l in (tmp_path / "watch.out").read_text().splitlines() if l]
        wait_until(lambda: len(lines()) >= 2, what="two JSON lines")
        cl.close()
        support.stop_and_check(srv)
        # While the server is down nothing can arrive; the CLI keeps trying and resumes.
        srv = support.start_server("--port", str(port), env=env, name="pixtrackd (cli watch, again)")
        cl = Client(srv.port)
        cl.generate(bot.id, 3001, 1000)
        wait_until(lambda: len(lines()) >= 4, timeout=30, what="events after the restart")
        got = [l["cursor"] for l in lines()]
        assert got == [c for c, _, _ in log_events(db_url, bot.id)]
        assert lines()[0]["payment"]["status"] == "PAYMENT_STATUS_PENDING_VERIFICATION"
    finally:
        proc.terminate()
        proc.wait(10)
        out.close()
        cl.close()
        support.stop_and_check(srv)


# --- outbound notifications -----------------------------------------------------------------------

class Receiver:
    """A loopback HTTP receiver recording every POST; `fail_first` answers 500 to that many."""

    def __init__(self, port: int = 0, fail_first: int = 0):
        self.posts: list[tuple[dict[str, str], bytes, float]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                code = 500 if len(outer.posts) <= outer.fail_first else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """What the README tells a receiver to do."""
    parts = dict(p.split("=", 1) for p in headers["pixtrack-signature"].split(","))
    t = int(parts["t"])
    if abs(time.time() - t) > 300:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def notify_bot(client: Client, url: str) -> tpb.Bot:
    bot = client.bot("sandbox")
    req = tpb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True, notify_url=url,
                               gateway=tpb.GatewayAccountInput(plugin="sandbox"))
    req.notify_secret.value = NOTIFY_SECRET
    out = client.track.UpsertBot(req, timeout=10)
    assert out.notify_url == url and out.has_notify_secret
    return out


def test_notify_url_rules(clients):
    c1, _ = clients
    bot = c1.bot("sandbox")
    for url, secret in (("http://example.com/hook", NOTIFY_SECRET), ("ftp://127.0.0.1/x", NOTIFY_SECRET),
                        ("https://bots.example.com/hook", "short"), ("https://bots.example.com/hook", None)):
        req = tpb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True, notify_url=url)
        if secret is not None:
            req.notify_secret.value = secret
        with pytest.raises(grpc.RpcError) as e:
            c1.track.UpsertBot(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert NOTIFY_SECRET not in (e.value.details() or "")
    ok = tpb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True,
                              notify_url="https://bots.example.com/hook")
    ok.notify_secret.value = NOTIFY_SECRET
    got = c1.track.UpsertBot(ok, timeout=10)
    assert got.has_notify_secret and NOTIFY_SECRET not in str(got)
    # Absent keeps the secret.
    again = c1.track.UpsertBot(tpb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True,
                                                    notify_url="https://bots.example.com/other"), timeout=10)
    assert again.has_notify_secret and again.notify_url == "https://bots.example.com/other"


def test_a_receiver_answering_500_gets_the_same_event_again_signed(pair, clients, db_url):
    one, _ = pair
    c1, _ = clients
    rx = Receiver(fail_first=1)
    try:
        bot = notify_bot(c1, f"http://127.0.0.1:{rx.port}/pixtrack")
        p = c1.generate(bot.id, 4000, 1990)
        pay(one.port, p)
        wait_until(lambda: c1.get(p.id).status == S.PAYMENT_STATUS_PAID, what="paid")
        wait_until(lambda: len({h["pixtrack-event-id"] for h, _, _ in rx.posts}) >= 3 and len(rx.posts) >= 4,
                   timeout=20, what="3 events delivered, the first one twice")
        (h1, b1, _), (h2, b2, _) = rx.posts[0], rx.posts[1]
        assert h1["pixtrack-event-id"] == h2["pixtrack-event-id"], "the 500 was not retried first (in order per payment)"
        assert b1 == b2 and h1["content-type"] == "application/json"
        for h, b, _ in rx.posts:
            assert verify(h, b, NOTIFY_SECRET), h
            assert not verify(h, b + b" ", NOTIFY_SECRET)
            ev = json.loads(b)
            assert ev["cursor"] == h["pixtrack-event-id"] and ev["payment"]["id"] == str(p.id)
        delivered_ids = []
        for h, _, _ in rx.posts:
            if h["pixtrack-event-id"] not in delivered_ids:
                delivered_ids.append(h["pixtrack-event-id"])
        assert delivered_ids == [c for c, _, _ in log_events(db_url, bot.id)], "not in order per payment"
        statuses = [json.loads(b)["payment"]["status"] for _, b, _ in rx.posts[1:]]
        assert statuses == ["PAYMENT_STATUS_PENDING_VERIFICATION", "PAYMENT_STATUS_PENDING", "PAYMENT_STATUS_PAID"]
        assert json.loads(rx.posts[-1][1])["previousStatus"] == "PAYMENT_STATUS_PENDING"  # proto3 JSON names
        wait_until(lambda: psql(f"SELECT string_agg(status, ',' ORDER BY event_id) FROM payment_notifications WHERE bot_id = {bot.id}", db_url)
                   == "delivered,delivered,delivered", what="all delivered")
        assert metric(one.port, 'pixtrack_notifications_total{result="retried"}') >= 1
        assert metric(one.port, 'pixtrack_notifications_total{result="delivered"}') >= 3
    finally:
        rx.close()


def test_a_receiver_that_is_down_is_parked_then_resent_by_the_operator(pair, clients, db_url):
    one, _ = pair
    c1, _ = clients
    port = support.free_port()  # nobody listens there yet
    bot = notify_bot(c1, f"http://127.0.0.1:{port}/down")
    ps = [c1.generate(bot.id, 4100 + i, 1990) for i in range(2)]
    state = lambda: psql(f"SELECT string_agg(status || ':' || attempts, ',' ORDER BY event_id) FROM payment_notifications WHERE bot_id = {bot.id}", db_url)
    wait_until(lambda: state() == "parked:3,parked:3,parked:3,parked:3", timeout=30, what="4 notifications parked after 3 attempts")
    assert metric(one.port, "pixtrack_notifications_parked") >= 4
    assert metric(one.port, 'pixtrack_notifications_total{result="parked"}') >= 4
    rx = Receiver(port=port)
    try:
        cli = support.pixtrackd_path().parent / "pixtrack"
        dry = subprocess.run([str(cli), "notify", "requeue", "--bot", str(bot.id), "--dry-run", "--addr", f"127.0.0.1:{one.port}"],
                             capture_output=True, text=True, timeout=30)
        assert dry.returncode == 0 and "would requeue 4 parked notifications" in dry.stdout, dry
        res = subprocess.run([str(cli), "notify", "requeue", "--bot", str(bot.id), "--addr", f"127.0.0.1:{one.port}"],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "requeued 4 parked notifications" in res.stdout, res
        wait_until(lambda: state() == "delivered:1,delivered:1,delivered:1,delivered:1", timeout=20, what="re-sent")
        got = [h["pixtrack-event-id"] for h, _, _ in rx.posts]
        assert sorted(got, key=cursor_key) == [c for c, _, _ in log_events(db_url, bot.id)], "something was lost"
        for p in ps:
            mine = [json.loads(b)["cursor"] for _, b, _ in rx.posts if json.loads(b)["payment"]["id"] == str(p.id)]
            assert mine == sorted(mine, key=cursor_key), "not in order per payment"
        assert all(verify(h, b, NOTIFY_SECRET) for h, b, _ in rx.posts)
    finally:
        rx.close()
