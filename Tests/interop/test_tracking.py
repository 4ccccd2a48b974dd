"""The tracking half against real PostgreSQL and Redis and a fake Graph API on loopback:
click → /start → ResolveToken, every recovery step, crawlers, trusted proxies, bad input,
Redis stopped mid-test, Meta failures and retries, and two instances draining one outbox."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.parse

import grpc
import pytest

import support
from tracking_support import (TCPProxy, header, http_request, metric, new_schema, pixel_id, psql, redis_cli, server_env,
                              unique_id, wait_until)

from pixtrack.v1 import tracking_pb2 as pb, tracking_pb2_grpc

CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
FB_IAB_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 [FBAN/FBIOS;FBAV/458.0.0.43.112;FBBV/590000000;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;"
             "FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/0]")
SECRET = "EAAB-super-secret-capi-token"


@pytest.fixture(scope="module")
def srv(meta, db_url):
    # 127.0.0.1 is not trusted here: X-Forwarded-For must be ignored.
    s = support.start_server(env=server_env(db_url, meta, PIXTRACK_TRUSTED_PROXIES="10.0.0.0/8"), name="pixtrackd (tracking)")
    yield s
    support.stop_and_check(s)
    assert SECRET not in s.log(), "the Conversions API token appeared in the log"


@pytest.fixture(scope="module")
def stub(srv):
    ch = support.channel(srv.port)
    yield tracking_pb2_grpc.TrackingServiceStub(ch)
    ch.close()


def make_bot(stub, *, pixel: str | None = None, token: str = SECRET, enabled: bool = True) -> pb.Bot:
    bid = unique_id()
    req = pb.UpsertBotRequest(id=bid, telegram_username=f"bot{bid}", enabled=enabled,
                              meta_pixel_id=pixel or "", meta_test_event_code="TEST123")
    if pixel:
        req.conversions_api_token.value = token
    return stub.UpsertBot(req, timeout=10)


def make_slug(stub, bots, mode=pb.SLUG_MODE_REDIRECT, strategy=pb.SLUG_STRATEGY_ROUND_ROBIN, name=None):
    slug = name or f"s-{unique_id()}"
    entries = [pb.SlugBot(bot_id=b.id, enabled=True, weight=w, priority=p) for b, w, p in bots]
    stub.UpsertSlug(pb.UpsertSlugRequest(slug=pb.Slug(slug=slug, mode=mode, strategy=strategy, bots=entries, enabled=True)),
                    timeout=10)
    return slug


def click(port, slug, query="", ua=CHROME_UA, headers=None):
    h = {"User-Agent": ua, "Host": "go.example.test"}
    h.update(headers or {})
    status, hdrs, body = http_request(port, "GET", f"/go/{slug}" + (f"?{query}" if query else ""), h)
    return status, hdrs, body


def token_of(hdrs) -> str:
    loc = header(hdrs, "location")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    return q["start"][0]


# --- the main chain ---------------------------------------------------------------------------------

def test_click_start_resolve_chain_and_pageview_delivered_once(srv, stub, meta):
    pixel = pixel_id()
    bot = make_bot(stub, pixel=pixel)
    assert bot.has_conversions_api_token and SECRET not in str(bot)
    slug = make_slug(stub, [(bot, 1, 0)])
    fbclid = "IwAR0" + "aBc_-" * 20
    status, hdrs, _ = click(srv.port, slug, f"fbclid={fbclid}&utm_source=fb&utm_campaign=c%201&grim=g7")
    assert status == 302
    loc = header(hdrs, "location")
    assert loc.startswith(f"https://t.me/{bot.telegram_username}?start=")
    token = token_of(hdrs)
    assert len(token) == 32 and all(c in "0123456789abcdef" for c in token)
    cookie = header(hdrs, "set-cookie")
    assert cookie.startswith("_fbp=fb.1.") and "Max-Age=7776000; Path=/; SameSite=Lax" in cookie
    fbp = cookie.split(";")[0].split("=", 1)[1]

    data = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token), timeout=5)
    assert (data.fbclid, data.utm_source, data.utm_campaign, data.grim) == (fbclid, "fb", "c 1", "g7")
    assert data.fbp == fbp and data.fbc == "" and data.client_ip == "127.0.0.1" and data.user_agent == CHROME_UA
    assert data.pageview_event_id.startswith("pageview_") and len(data.pageview_event_id) == 41
    assert data.event_source_url.startswith("http://go.example.test/go/")
    assert redis_cli("GET", f"tracking:fbclid:{fbclid}") == token
    ttl = int(redis_cli("TTL", f"tracking:{token}"))
    assert 7 * 86400 - 60 < ttl <= 7 * 86400

    user = unique_id()
    bound = stub.BindStart(pb.BindStartRequest(bot_id=bot.id, telegram_user_id=user, start_param=token, chat_id=user), timeout=5)
    assert bound.outcome == pb.BIND_OUTCOME_BOUND and bound.token == token
    assert redis_cli("GET", f"tracking:last_token:user:{bot.id}:{user}") == token
    assert json.loads(redis_cli("GET", f"tracking:chat:{bot.id}:{user}"))["token"] == token
    resolved = stub.ResolveToken(pb.ResolveTokenRequest(bot_id=bot.id, telegram_user_id=user), timeout=5)
    assert resolved.source == pb.TOKEN_SOURCE_BOT_USER and resolved.token == token
    assert resolved.tracking.fbclid == fbclid

    events = wait_until(lambda: meta.events(data.pageview_event_id), what="the PageView at the fake Meta")
    time.sleep(0.3)
    events = meta.events(data.pageview_event_id)
    assert len(events) == 1, events
    ev = events[0]
    assert ev["event_name"] == "PageView" and ev["action_source"] == "website" and ev["pixel_id"] == pixel
    assert ev["access_token"] == SECRET and ev["test_event_code"] == "TEST123"
    assert abs(ev["event_time"] - time.time()) < 60
    ud = ev["user_data"]
    assert ud["fbp"] == fbp and ud["client_ip_address"] == "127.0.0.1" and ud["client_user_agent"] == CHROME_UA
    assert ud["external_id"] == hashlib.sha256(fbclid.encode()).hexdigest() and "fbc" not in ud
    assert metric(srv.port, 'pixtrack_meta_events_sent_total{event_name="PageView"}') >= 1


def test_fbc_and_fbp_from_cookies_and_params(srv, stub):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    fbc = "fb.1.1700000000000.IwAR_cookie"
    status, hdrs, _ = click(srv.port, slug, "fbclid=abc", headers={"Cookie": f"_fbp=fb.1.1700000000000.42; _fbc={fbc}"})
    assert status == 302 and header(hdrs, "set-cookie") is None
    d = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5)
    assert (d.fbp, d.fbc, d.fbc_origin) == ("fb.1.1700000000000.42", fbc, pb.FBC_ORIGIN_COOKIE)
    status, hdrs, _ = click(srv.port, slug, "_fbp_cookie=fb.1.1700000000001.7&_fbc_cookie=fb.1.1700000000001.xyz")
    d = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5)
    assert (d.fbp, d.fbc) == ("fb.1.1700000000001.7", "fb.1.1700000000001.xyz")
    # Never synthesized by default.
    status, hdrs, _ = click(srv.port, slug, "fbclid=only")
    assert stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5).fbc == ""
    # Merge rules: empty never overwrites; a browser cookie replaces.
    token = token_of(hdrs)
    merged = stub.MergeBrowserCookies(pb.MergeBrowserCookiesRequest(token=token, fbp="", fbc="fb.1.1700000000002.br"), timeout=5)
    assert merged.fbc == "fb.1.1700000000002.br" and merged.fbp.startswith("fb.1.")
    status, _, _ = http_request(srv.port, "POST", f"/t/{token}/cookies", {"Content-Type": "application/x-www-form-urlencoded"},
                                b"fbp=fb.1.1700000000003.99&fbc=")
    assert status == 204
    d = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token), timeout=5)
    assert (d.fbp, d.fbc) == ("fb.1.1700000000003.99", "fb.1.1700000000002.br")


# --- recovery ---------------------------------------------------------------------------------------

def test_every_recovery_step(srv, stub, db_url):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    resolve = lambda u: stub.ResolveToken(pb.ResolveTokenRequest(bot_id=bot.id, telegram_user_id=u), timeout=5)

    # Legacy "tracking_…" binding recovered through tracking:fbclid:{fbclid}.
    fbclid = f"legacy{unique_id()}"
    _, hdrs, _ = click(srv.port, slug, f"fbclid={fbclid}")
    token = token_of(hdrs)
    legacy_user = unique_id()
    psql(f"INSERT INTO bot_users (bot_id, telegram_user_id, tracking_session_id, fbclid) "
         f"VALUES ({bot.id}, {legacy_user}, 'tracking_{legacy_user}_old', '{fbclid}')", db_url)
    r = resolve(legacy_user)
    assert (r.source, r.token) == (pb.TOKEN_SOURCE_FBCLID_INDEX, token) and r.tracking.fbclid == fbclid

    # Legacy value whose fbclid index is gone: falls through to the last-token key, then chat.
    lost = unique_id()
    psql(f"INSERT INTO bot_users (bot_id, telegram_user_id, tracking_session_id, fbclid) "
         f"VALUES ({bot.id}, {lost}, 'tracking_x', 'nothing-indexed-{lost}')", db_url)
    redis_cli("SET", f"tracking:last_token:user:{bot.id}:{lost}", token, "EX", "60")
    assert (resolve(lost).source, resolve(lost).token) == (pb.TOKEN_SOURCE_LAST_TOKEN, token)

    chat_user = unique_id()
    redis_cli("SET", f"tracking:chat:{bot.id}:{chat_user}", json.dumps({"token": token, "chat_id": 1}), "EX", "60")
    r = resolve(chat_user)
    assert (r.source, r.token) == (pb.TOKEN_SOURCE_CHAT, token)

    r = resolve(unique_id())
    assert r.source == pb.TOKEN_SOURCE_NONE and r.token == ""


def test_start_params_never_replace_a_good_binding_and_last_click_wins(srv, stub):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    user = unique_id()
    bind = lambda p: stub.BindStart(pb.BindStartRequest(bot_id=bot.id, telegram_user_id=user, start_param=p), timeout=5)
    resolve = lambda: stub.ResolveToken(pb.ResolveTokenRequest(bot_id=bot.id, telegram_user_id=user), timeout=5)
    first = token_of(click(srv.port, slug)[1])
    assert bind(first).outcome == pb.BIND_OUTCOME_BOUND
    for garbage in ["hello", "", "ABCDEF" * 6, first.upper(), first + "x", "../../etc", "😀" * 10]:
        assert bind(garbage).outcome == pb.BIND_OUTCOME_NOT_A_TOKEN
        assert resolve().token == first
    # A well-formed token without data does not replace a live binding.
    ghost = "0" * 32
    kept = bind(ghost)
    assert kept.outcome == pb.BIND_OUTCOME_KEPT_PREVIOUS and resolve().token == first
    # The last click wins, also with the __px_ form.
    second = token_of(click(srv.port, slug)[1])
    r = bind(f"{second}__px_123456")
    assert (r.outcome, r.token, r.pixel_id, r.previous_token) == (pb.BIND_OUTCOME_BOUND, second, "123456", first)
    assert resolve().token == second
    # A user with no live binding gets even a token without data (bound without data).
    other = stub.BindStart(pb.BindStartRequest(bot_id=bot.id, telegram_user_id=unique_id(), start_param=ghost), timeout=5)
    assert other.outcome == pb.BIND_OUTCOME_BOUND_WITHOUT_DATA


# --- crawlers, proxies, strategies --------------------------------------------------------------------

@pytest.mark.parametrize("ua", ["facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                                "Mozilla/5.0 (compatible; Googlebot/2.1)", "WhatsApp/2.23.20.0", "TelegramBot (like TwitterBot)"])
def test_crawler_gets_redirect_without_token(srv, stub, ua):
    bot = make_bot(stub, pixel=pixel_id())
    slug = make_slug(stub, [(bot, 1, 0)])
    before = metric(srv.port, 'pixtrack_tracking_pageviews_total{result="crawler"}')
    status, hdrs, _ = click(srv.port, slug, "fbclid=crawl", ua=ua)
    assert status == 302 and header(hdrs, "location") == f"https://t.me/{bot.telegram_username}"
    assert header(hdrs, "set-cookie") is None
    assert metric(srv.port, 'pixtrack_tracking_pageviews_total{result="crawler"}') == before + 1
    r = stub.RecordPageView(pb.RecordPageViewRequest(slug=slug, user_agent=ua), timeout=5)
    assert r.crawler and r.token == "" and r.pageview_event_id == ""


def test_facebook_in_app_browser_is_a_person(srv, stub):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    status, hdrs, _ = click(srv.port, slug, ua=FB_IAB_UA)
    assert status == 302 and len(token_of(hdrs)) == 32 and header(hdrs, "set-cookie")


def test_forwarded_for_ignored_from_untrusted_peer(srv, stub):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    _, hdrs, _ = click(srv.port, slug, headers={"X-Forwarded-For": "203.0.113.9"})
    assert stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5).client_ip == "127.0.0.1"


def test_forwarded_for_honoured_from_trusted_proxy(meta, db_url):
    with support.start_server(env=server_env(db_url, meta, PIXTRACK_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8",
                                             PIXTRACK_META_SENDER="0"), name="pixtrackd (proxy)") as s:
        ch = support.channel(s.port)
        st = tracking_pb2_grpc.TrackingServiceStub(ch)
        bot = make_bot(st)
        slug = make_slug(st, [(bot, 1, 0)])
        cases = [("203.0.113.7", "203.0.113.7"), ("198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
                 ("garbage, 10.0.0.5", "10.0.0.5"), ("2001:db8::1", "2001:db8::1")]
        for xff, want in cases:
            _, hdrs, _ = click(s.port, slug, headers={"X-Forwarded-For": xff, "X-Forwarded-Proto": "https"})
            d = st.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5)
            assert d.client_ip == want, xff
            assert d.event_source_url.startswith("https://go.example.test/")
        ch.close()
        support.stop_and_check(s)


def test_distribution_strategies(srv, stub):
    a, b, c = make_bot(stub), make_bot(stub), make_bot(stub)
    rr = make_slug(stub, [(a, 1, 0), (b, 1, 0)])
    got = [click(srv.port, rr, ua="Twitterbot")[1] for _ in range(4)]
    names = [header(h, "location").rsplit("/", 1)[1] for h in got]
    assert sorted(names) == sorted([a.telegram_username, b.telegram_username] * 2) and names[0] != names[1]
    weighted = make_slug(stub, [(a, 3, 0), (b, 1, 0)], strategy=pb.SLUG_STRATEGY_WEIGHTED)
    names = [header(click(srv.port, weighted, ua="Twitterbot")[1], "location").rsplit("/", 1)[1] for _ in range(8)]
    assert names.count(a.telegram_username) == 6 and names.count(b.telegram_username) == 2
    prio = make_slug(stub, [(a, 1, 5), (c, 1, 1), (b, 1, 9)], strategy=pb.SLUG_STRATEGY_PRIORITY)
    assert {header(click(srv.port, prio, ua="Twitterbot")[1], "location") for _ in range(3)} == {f"https://t.me/{c.telegram_username}"}


# --- bad input -------------------------------------------------------------------------------------------

def test_bad_input_never_500_and_never_a_stray_token(srv, stub):
    bot = make_bot(stub)
    slug = make_slug(stub, [(bot, 1, 0)])
    for path in ["/go/..%2F..", "/go/%00", "/go/a%20b", "/go/" + "x" * 100, "/go/%FF%FE", "/go/unknown-" + str(unique_id())]:
        status, hdrs, body = http_request(srv.port, "GET", path, {"User-Agent": CHROME_UA})
        assert status == 404, (path, status)
        assert header(hdrs, "location") is None
    disabled = make_bot(stub, enabled=False)
    status, _, body = click(srv.port, make_slug(stub, [(disabled, 1, 0)]))
    assert status == 503 and b"no bot available" in body
    # Over-long fbclid: the click goes on, the fbclid is refused rather than cut.
    status, hdrs, _ = click(srv.port, slug, "fbclid=" + "A" * 300 + "&utm_source=%FF%FE%00x")
    assert status == 302
    d = stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5)
    assert d.fbclid == "" and "x" in d.utm_source
    status, hdrs, _ = click(srv.port, slug, "fbclid=" + "B" * 255)
    assert stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5).fbclid == "B" * 255
    with pytest.raises(grpc.RpcError) as e:
        stub.RecordPageView(pb.RecordPageViewRequest(slug=slug, fbclid="C" * 256), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    big = stub.RecordPageView(pb.RecordPageViewRequest(slug=slug, user_agent="U" * 65536, client_ip="not-an-ip"), timeout=5)
    d = stub.GetTrackingData(pb.GetTrackingDataRequest(token=big.token), timeout=5)
    assert len(d.user_agent) == 2048 and d.client_ip == ""
    status, _, _ = click(srv.port, slug, ua="U" * 20000)
    assert status == 431
    for call, req, code in [
        (stub.BindStart, pb.BindStartRequest(bot_id=unique_id(), telegram_user_id=1, start_param="x"), grpc.StatusCode.NOT_FOUND),
        (stub.BindStart, pb.BindStartRequest(bot_id=bot.id, telegram_user_id=0), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.ResolveToken, pb.ResolveTokenRequest(bot_id=unique_id(), telegram_user_id=1), grpc.StatusCode.NOT_FOUND),
        (stub.GetTrackingData, pb.GetTrackingDataRequest(token="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.GetTrackingData, pb.GetTrackingDataRequest(token="f" * 32), grpc.StatusCode.NOT_FOUND),
        (stub.RecordPageView, pb.RecordPageViewRequest(slug="Ünïcode!"), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.UpsertSlug, pb.UpsertSlugRequest(slug=pb.Slug(slug="ok-slug", bots=[pb.SlugBot(bot_id=unique_id(), enabled=True)])),
         grpc.StatusCode.FAILED_PRECONDITION),
        (stub.UpsertBot, pb.UpsertBotRequest(id=-5, telegram_username="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.GetBot, pb.GetBotRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            call(req, timeout=5)
        assert e.value.code() == code, (req, e.value)
    # Raw non-UTF-8 in a proto string field is a decode error, not a crash.
    raw = support.grpc_message(b"\x1a\x02\xff\xfe")
    with support.H2Client(srv.port) as h2:
        st = h2.wait(h2.request("/pixtrack.v1.TrackingService/BindStart", raw))
        assert st.grpc_status == 3
    status, _, _ = http_request(srv.port, "POST", "/t/zz/cookies", {}, b"fbp=1")
    assert status == 400
    assert metric(srv.port, 'pixtrack_go_requests_total{result="unavailable"}') == 0


def test_bots_list_and_secrets_write_only(srv, stub):
    bot = make_bot(stub, pixel=pixel_id())
    got = stub.GetBot(pb.GetBotRequest(id=bot.id), timeout=5)
    assert got.has_conversions_api_token and SECRET not in got.SerializeToString().decode("latin1")
    by_name = stub.GetBot(pb.GetBotRequest(telegram_username=bot.telegram_username.upper()), timeout=5)
    assert by_name.id == bot.id
    # Absent secret keeps it; present-but-empty clears it.
    kept = stub.UpsertBot(pb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, meta_pixel_id="1", enabled=True), timeout=5)
    assert kept.has_conversions_api_token
    req = pb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True)
    req.conversions_api_token.value = ""
    req.gateway.plugin = "sandbox"
    req.gateway.credentials.values["api_key"] = "gw-secret"
    cleared = stub.UpsertBot(req, timeout=5)
    assert not cleared.has_conversions_api_token and cleared.gateway.has_credentials and cleared.gateway.plugin == "sandbox"
    page = stub.ListBots(pb.ListBotsRequest(include_disabled=True, page_size=1), timeout=5)
    assert len(page.bots) == 1 and page.next_page_token
    page2 = stub.ListBots(pb.ListBotsRequest(include_disabled=True, page_size=1, page_token=page.next_page_token), timeout=5)
    assert page2.bots[0].id > page.bots[0].id


# --- Redis stopped mid-test ----------------------------------------------------------------------------------

def test_redis_stopped_mid_test_still_redirects(meta, db_url, tmp_path):
    port = support_spare_port()
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
                    "--appendonly", "no", "--dir", str(tmp_path), "--pidfile", str(tmp_path / "r.pid")], check=True)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis_cli("PING", url=url) == "PONG", what="private redis")
    try:
        env = server_env(db_url, meta, REDIS_URL=url, PIXTRACK_META_SENDER="0")
        with support.start_server(env=env, name="pixtrackd (redis)") as s:
            ch = support.channel(s.port)
            st = tracking_pb2_grpc.TrackingServiceStub(ch)
            bot = make_bot(st)
            slug = make_slug(st, [(bot, 1, 0)])
            status, hdrs, _ = click(s.port, slug)
            assert status == 302 and redis_cli("EXISTS", f"tracking:{token_of(hdrs)}", url=url) == "1"
            redis_cli("SHUTDOWN", "NOSAVE", url=url)
            wait_until(lambda: redis_cli("PING", url=url) != "PONG", what="redis to stop")
            t0 = time.monotonic()
            status, hdrs, _ = click(s.port, slug)
            assert status == 302 and len(token_of(hdrs)) == 32 and time.monotonic() - t0 < 2
            assert metric(s.port, 'pixtrack_tracking_redis_failures_total{operation="record_pageview"}') >= 1
            r = st.RecordPageView(pb.RecordPageViewRequest(slug=slug, user_agent=CHROME_UA), timeout=5)
            assert r.token and not r.tracking_stored
            wait_until(lambda: http_request(s.port, "GET", "/readyz")[0] == 503, what="/readyz to report redis")
            assert b"redis" in http_request(s.port, "GET", "/readyz")[2]
            support.assert_serving(s)  # PostgreSQL still up: SERVING
            ch.close()
            support.stop_and_check(s)
            assert "event=pageview_redis_failed" in s.log()
    finally:
        redis_cli("SHUTDOWN", "NOSAVE", url=url)


def support_spare_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Meta delivery ---------------------------------------------------------------------------------------------

def queue_pageview(stub, srv, slug) -> str:
    _, hdrs, _ = click(srv.port, slug)
    return stub.GetTrackingData(pb.GetTrackingDataRequest(token=token_of(hdrs)), timeout=5).pageview_event_id


def test_meta_500s_then_transient_then_delivered_exactly_once(srv, stub, meta):
    pixel = pixel_id()
    slug = make_slug(stub, [(make_bot(stub, pixel=pixel), 1, 0)])
    meta.fault(kind="http500", times=2, pixel=pixel)
    meta.fault(kind="transient", times=2, pixel=pixel)
    meta.fault(kind="rate_limit", times=1, pixel=pixel)
    meta.fault(kind="code", code=613, times=1, pixel=pixel)
    eid = queue_pageview(stub, srv, slug)
    wait_until(lambda: meta.events(eid), timeout=15, what="delivery after retries")
    time.sleep(0.5)
    assert len(meta.events(eid)) == 1
    statuses = [r["status"] for r in meta.requests(pixel)]
    assert statuses == [500, 500, 500, 500, 429, 400, 200], statuses
    assert psql(f"SELECT status || ':' || attempts FROM meta_events WHERE event_id = '{eid}'", srv_db(srv)) == "sent:7"


def srv_db(srv) -> str:
    return srv.extra_env["DATABASE_URL"]


def test_meta_code_100_parks_the_bad_event_and_delivers_the_rest(srv, stub, meta):
    pixel = pixel_id()
    slug = make_slug(stub, [(make_bot(stub, pixel=pixel), 1, 0)])
    # Hold delivery (a slow first request) so several events share one batch.
    meta.fault(kind="latency", latency_ms=700, times=1, pixel=pixel)
    first = queue_pageview(stub, srv, slug)
    time.sleep(0.2)
    ids = [queue_pageview(stub, srv, slug) for _ in range(5)]
    meta.call("/_control/reject_event", {"event_id": ids[2]})
    # Settled: nothing queued and nothing on the wire (rows are `sending` while their POST runs).
    wait_until(lambda: psql(f"SELECT count(*) FROM meta_events WHERE pixel_id = '{pixel}' AND status IN ('queued', 'sending')",
                            srv_db(srv)) == "0",
               timeout=15, what="the outbox to settle")
    assert len(meta.events(first)) == 1
    for i, eid in enumerate(ids):
        assert len(meta.events(eid)) == (0 if i == 2 else 1), eid
    row = psql(f"SELECT status || '|' || last_error FROM meta_events WHERE event_id = '{ids[2]}'", srv_db(srv))
    assert row.startswith("parked|graph code 100"), row
    assert any(r["events"] > 1 and r["code"] == 100 for r in meta.requests(pixel)), "no batch was split"
    # Token errors park too, with the reason.
    pixel2 = pixel_id()
    slug2 = make_slug(stub, [(make_bot(stub, pixel=pixel2), 1, 0)])
    meta.call("/_control/token", {"pixel": pixel2, "token": "another-token"})
    eid = queue_pageview(stub, srv, slug2)
    wait_until(lambda: psql(f"SELECT status FROM meta_events WHERE event_id = '{eid}'", srv_db(srv)) == "parked", what="parked 190")
    assert "190" in psql(f"SELECT last_error FROM meta_events WHERE event_id = '{eid}'", srv_db(srv))
    assert metric(srv.port, "pixtrack_meta_events_parked_total") >= 2
    assert 'pixtrack_meta_queue_depth{status="parked"}' in http_request(srv.port, "GET", "/metrics")[2].decode()


def test_parked_events_are_requeued_by_the_operator_once_the_token_is_fixed(srv, stub, meta):
    pixel = pixel_id()
    bot = make_bot(stub, pixel=pixel)
    slug = make_slug(stub, [(bot, 1, 0)])
    meta.call("/_control/token", {"pixel": pixel, "token": "the-right-token"})
    eids = [queue_pageview(stub, srv, slug) for _ in range(3)]
    for eid in eids:
        wait_until(lambda: psql(f"SELECT status FROM meta_events WHERE event_id = '{eid}'", srv_db(srv)) == "parked",
                   what="parked after code 190")
    with pytest.raises(grpc.RpcError) as e:
        stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pixel_id" in e.value.details()
    for bad in ([""], ["x"] * 1001):
        with pytest.raises(grpc.RpcError) as e:
            stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel, event_ids=bad), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "event_ids" in e.value.details()
    dry = stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel, dry_run=True), timeout=5)
    assert (dry.requeued, dry.too_old) == (3, 0)
    assert psql(f"SELECT count(*) FROM meta_events WHERE pixel_id = '{pixel}' AND status = 'parked'", srv_db(srv)) == "3"
    # The fix: the bot gets the token Meta expects; then one call puts the events back in the queue.
    fixed = pb.UpsertBotRequest(id=bot.id, telegram_username=bot.telegram_username, enabled=True,
                                meta_pixel_id=pixel, meta_test_event_code="TEST123")
    fixed.conversions_api_token.value = "the-right-token"
    stub.UpsertBot(fixed, timeout=10)
    done = stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel, event_name="PageView"), timeout=5)
    assert (done.requeued, done.too_old) == (3, 0)
    for eid in eids:
        wait_until(lambda: len(meta.events(eid)) == 1, timeout=15, what="delivery after the requeue")
    time.sleep(0.3)
    assert all(len(meta.events(eid)) == 1 for eid in eids)
    assert psql(f"SELECT string_agg(DISTINCT status, ',') FROM meta_events WHERE pixel_id = '{pixel}'", srv_db(srv)) == "sent"
    again = stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel), timeout=5)
    assert (again.requeued, again.too_old) == (0, 0)
    assert "the-right-token" not in srv.log()


def test_a_purchase_meta_got_but_never_answered_is_parked_not_sent_twice(srv, stub, meta):
    """The request reaches Meta, which counts the event, but the answer comes after our 1.5 s
    timeout. A PageView would be retried; a Purchase is parked for an operator instead."""
    pixel = pixel_id()
    make_bot(stub, pixel=pixel)
    meta.fault(kind="latency", latency_ms=2500, times=1, pixel=pixel)
    eid = f"purchase_it_{unique_id()}"
    payload = json.dumps({
        "event_name": "Purchase", "event_time": int(time.time()), "event_id": eid, "action_source": "website",
        "event_source_url": "https://go.example.test/go/x",
        "user_data": {"client_user_agent": CHROME_UA, "client_ip_address": "203.0.113.9"},
        "custom_data": {"currency": "BRL", "value": 19.9}})
    psql(f"INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload) VALUES "
         f"('{pixel}', 'Purchase', '{eid}', {int(time.time())}, '{payload}')", srv_db(srv))
    wait_until(lambda: psql(f"SELECT status FROM meta_events WHERE event_id = '{eid}'", srv_db(srv)) == "parked",
               timeout=15, what="the unanswered Purchase to be parked")
    wait_until(lambda: len(meta.events(eid)) == 1, timeout=10, what="Meta to have counted it (late)")
    time.sleep(1.0)  # several sender polls: nothing sends it again
    assert len(meta.events(eid)) == 1
    reason = psql(f"SELECT last_error FROM meta_events WHERE event_id = '{eid}'", srv_db(srv))
    assert reason.startswith("sent without an answer: Meta may already count this Purchase") and "timeout" in reason, reason
    dry = stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel, event_name="Purchase", dry_run=True), timeout=5)
    assert dry.requeued == 1
    # Had Events Manager shown it missing, the operator would send exactly this one again.
    one = stub.RequeueMetaEvents(pb.RequeueMetaEventsRequest(pixel_id=pixel, event_ids=[eid, "purchase_other"]), timeout=5)
    assert (one.requeued, one.too_old) == (1, 0)
    wait_until(lambda: len(meta.events(eid)) == 2, timeout=10, what="the operator's explicit re-send")


def test_events_older_than_7_days_are_dropped_and_counted(srv, stub, meta, db_url):
    pixel = pixel_id()
    make_bot(stub, pixel=pixel)
    before = metric(srv.port, "pixtrack_meta_events_dropped_total")
    old = int(time.time()) - 8 * 86400
    psql(f"INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload) VALUES "
         f"('{pixel}', 'PageView', 'old-{pixel}', {old}, '{{}}')", db_url)
    wait_until(lambda: psql(f"SELECT status FROM meta_events WHERE event_id = 'old-{pixel}'", db_url) == "dropped", what="drop")
    wait_until(lambda: metric(srv.port, "pixtrack_meta_events_dropped_total") == before + 1, what="dropped metric")
    assert meta.requests(pixel) == []


def test_two_instances_drain_one_queue_without_double_sends(meta):
    db = new_schema()
    pixel = pixel_id()
    env = server_env(db, meta, PIXTRACK_META_BATCH_SIZE="7", PIXTRACK_META_POLL_MS="20")
    with support.start_server(env=dict(env, PIXTRACK_META_SENDER="0"), name="pixtrackd (queue only)") as q:
        ch = support.channel(q.port)
        st = tracking_pb2_grpc.TrackingServiceStub(ch)
        make_bot(st, pixel=pixel)
        ch.close()
        support.stop_and_check(q)
    # Both senders are polling before the rows appear, so they compete for every batch.
    a = support.start_server(env=env, name="pixtrackd (sender A)")
    b = support.start_server(env=env, name="pixtrackd (sender B)")
    meta.fault(kind="latency", latency_ms=40, times=1000, pixel=pixel)
    now = int(time.time())
    payload = json.dumps({"event_name": "PageView", "event_time": now, "action_source": "website",
                          "event_source_url": "https://x.test/", "user_data": {"client_user_agent": "UA"}})
    psql(f"INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload) "
         f"SELECT '{pixel}', 'PageView', 'ev-' || g, {now}, jsonb_set('{payload}'::jsonb, '{{event_id}}', to_jsonb('ev-' || g)) "
         f"FROM generate_series(1, 200) g", db)
    try:
        wait_until(lambda: psql("SELECT count(*) FROM meta_events WHERE status = 'sent'", db) == "200", timeout=30,
                   what="both senders to drain the queue")
        sent = [metric(s.port, "pixtrack_meta_events_sent_total") for s in (a, b)]
    finally:
        support.stop_and_check(a)
        support.stop_and_check(b)
    ids = [e["event_id"] for e in meta.events() if e["pixel_id"] == pixel]
    assert len(ids) == 200 and len(set(ids)) == 200, "an event was sent twice or lost"
    assert sum(sent) == 200 and min(sent) > 0, f"per-instance sends {sent}: both instances should have taken part"
    support.figure(f"two senders drained 200 events: {sent[0]:.0f} + {sent[1]:.0f}, no duplicates")


# --- lifecycle -----------------------------------------------------------------------------------------------------

def test_migrate_command_and_missing_urls(db_url):
    binary = str(support.pixtrackd_path())
    base = {"PATH": "/usr/bin:/bin"}
    res = subprocess.run([binary, "migrate"], env=dict(base, DATABASE_URL=db_url, REDIS_URL="redis://127.0.0.1:1/0"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "migrations_done" in res.stderr
    res = subprocess.run([binary, "--port", "0"], env=dict(base, REDIS_URL="redis://127.0.0.1:1/0"), capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "DATABASE_URL is not set" in res.stderr
    res = subprocess.run([binary, "--port", "0"], env=dict(base, DATABASE_URL=db_url), capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "REDIS_URL is not set" in res.stderr


def test_health_not_serving_while_postgres_unreachable(meta, db_url):
    u = urllib.parse.urlsplit(db_url)
    proxy = TCPProxy(u.port)
    proxied = urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}@127.0.0.1:{proxy.port}"))
    try:
        with support.start_server(env=server_env(proxied, meta, PIXTRACK_META_SENDER="0"), name="pixtrackd (pg proxy)") as s:
            from grpc_health.v1 import health_pb2
            ch = support.channel(s.port)
            assert support.health_check(ch).status == health_pb2.HealthCheckResponse.SERVING
            proxy.cut()
            wait_until(lambda: support.health_check(ch).status == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=15,
                       what="NOT_SERVING with PostgreSQL unreachable")
            status, _, body = http_request(s.port, "GET", "/readyz")
            assert status == 503 and b"postgres" in body
            status, _, body = click(s.port, "any-slug")
            assert status == 503 and b"Temporarily unavailable" in body
            proxy.restore()
            wait_until(lambda: support.health_check(ch).status == health_pb2.HealthCheckResponse.SERVING, timeout=15,
                       what="SERVING again")
            ch.close()
            support.stop_and_check(s)
    finally:
        proxy.close()
