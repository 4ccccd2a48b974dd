"""Secrets at rest (docs/secrets.md): the secret columns hold AES-256-GCM envelopes under the key
of PIXTRACK_SECRETS_KEY_FILE, so a pg_dump holds no credential; the same key after a restart
still opens them (the fake Meta gets the right token, a fake gateway the right key); a rotation
leaves every value readable and under the new key id; a wrong or missing key is a clear startup
error naming the key id; plaintext rows are sealed at the first start; a value that does not open
is never sent. The servers here run as a role that owns only its schema (least privilege)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import urllib.parse
import uuid
from pathlib import Path

import grpc
import pytest

import support
from payments_support import Client, payment_env
from tracking_support import http_request, new_schema, psql, require_env, unique_id, wait_until

from pixtrack.v1 import payment_pb2 as ppb, tracking_pb2 as tpb

MARK = uuid.uuid4().hex[:10]
GATEWAY_KEY = f"marker-gateway-key-{MARK}"
CAPI_TOKEN = f"EAAB-marker-capi-token-{MARK}"
NOTIFY_SECRET = f"marker-notify-secret-{MARK}-0123456789abcdef"
MARKERS = (GATEWAY_KEY, CAPI_TOKEN, NOTIFY_SECRET, MARK)


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"pixtrack secrets key id\0" + key).digest()[:8].hex()


class Key:
    def __init__(self, folder: Path, name: str):
        self.raw = os.urandom(32)
        self.id = key_id(self.raw)
        self.path = folder / f"{name}.key"
        self.path.write_text(base64.b64encode(self.raw).decode() + "\n")
        self.path.chmod(0o600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="module")
def app_db():
    """A schema owned by a role of its own (no superuser, no CREATEDB/CREATEROLE): the server's
    DATABASE_URL. Returns (app URL, superuser URL with the same search_path)."""
    name = "s_" + uuid.uuid4().hex[:10]
    psql(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; CREATE SCHEMA {name} AUTHORIZATION {name}")
    admin = urllib.parse.urlsplit(require_env("DATABASE_URL"))
    netloc = f"{name}@{admin.hostname}:{admin.port}"
    query = f"options=-csearch_path%3D{name}"
    app = urllib.parse.urlunsplit((admin.scheme, netloc, admin.path, query, ""))
    sep = "&" if admin.query else ""
    return app, urllib.parse.urlunsplit(admin._replace(query=admin.query + sep + query)), name


@pytest.fixture(scope="module")
def keys(folder):
    return {n: Key(folder, n) for n in ("a", "b", "stranger")}


@pytest.fixture(scope="module")
def marked_fakes(fakes):
    fakes.call("/_control/config", {"credentials": {"paradise": {"api_key": GATEWAY_KEY}}})
    yield fakes
    fakes.call("/_control/config", {"credentials": {"paradise": {"api_key": "paradise-key"}}})


def env_for(app_db, meta, key: Key | None, old: list[Key] | None = None, **extra: str) -> dict[str, str]:
    env = payment_env(app_db[0], meta, **extra)
    env["PIXTRACK_SECRETS_KEY_FILE"] = str(key.path) if key else ""
    env["PIXTRACK_SECRETS_OLD_KEY_FILES"] = ",".join(str(k.path) for k in old or [])
    return env


def run_pixtrackd(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIXTRACK_") or k in ("PIXTRACK_TEST_PG_BIN",)}
    full.update(env)
    return subprocess.run([str(support.pixtrackd_path()), *args], env=full, capture_output=True, text=True, timeout=timeout)


def stored(admin_url: str) -> list[str]:
    out = psql("SELECT concat_ws(E'\\n', capi_token, gateway_credentials, notify_secret) FROM bots ORDER BY id", admin_url)
    return [v for v in out.splitlines() if v]


def pg_dump(admin_url: str, schema: str) -> str:
    pg_bin = os.environ.get("PIXTRACK_TEST_PG_BIN", "")
    exe = str(Path(pg_bin) / "pg_dump") if pg_bin else "pg_dump"
    base = require_env("DATABASE_URL")
    res = subprocess.run([exe, "--no-owner", "-n", schema, base], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def marked_bot(cl: Client, fakes) -> tpb.Bot:
    bid = unique_id()
    req = tpb.UpsertBotRequest(id=bid, telegram_username=f"sec{bid}", enabled=True, meta_pixel_id=str(bid))
    req.conversions_api_token.value = CAPI_TOKEN
    req.gateway.plugin = "paradise"
    req.gateway.base_url = fakes.base + "/paradise/api/v1"
    req.gateway.credentials.values["api_key"] = GATEWAY_KEY
    req.gateway.credentials.values["product_hash"] = "prod_1"
    req.notify_url = "http://127.0.0.1:9/notify"
    req.notify_secret.value = NOTIFY_SECRET
    bot = cl.track.UpsertBot(req, timeout=10)
    assert bot.gateway.has_credentials and bot.has_conversions_api_token and bot.has_notify_secret
    assert MARK not in str(bot)
    return bot


def pix_reaches_the_gateway_with(cl: Client, fakes, bot_id: int) -> None:
    before = len(fakes.requests("paradise"))
    p = cl.generate(bot_id, unique_id(), 1990)
    assert p.status == ppb.PAYMENT_STATUS_PENDING, p
    sent = fakes.requests("paradise")[before:]
    assert sent and all(r["headers"].get("x-api-key") == GATEWAY_KEY for r in sent), sent


def pageview_reaches_meta_with(cl: Client, srv, meta, bot: tpb.Bot) -> None:
    slug = f"sec-{unique_id()}"
    cl.track.UpsertSlug(tpb.UpsertSlugRequest(slug=tpb.Slug(slug=slug, bots=[tpb.SlugBot(bot_id=bot.id, enabled=True)],
                                                            enabled=True)), timeout=10)
    status, _, _ = http_request(srv.port, "GET", f"/go/{slug}", {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"})
    assert status in (302, 303), status
    events = wait_until(lambda: [e for e in meta.events() if e.get("pixel_id") == bot.meta_pixel_id], timeout=15,
                        what="the PageView at the fake Meta")
    assert {e["access_token"] for e in events} == {CAPI_TOKEN}


def assert_log_clean(*servers) -> None:
    for s in servers:
        log = s.log()
        for m in MARKERS:
            assert m not in log, f"{s.name} logged a secret"


def test_dump_has_no_marker_and_a_restart_with_the_key_sends_the_right_secrets(app_db, keys, meta, marked_fakes):
    a = keys["a"]
    with support.start_server(env=env_for(app_db, meta, a), name="pixtrackd (key a)") as one:
        cl = Client(one.port)
        bot = marked_bot(cl, marked_fakes)
        pix_reaches_the_gateway_with(cl, marked_fakes, bot.id)
        cl.close()
    values = stored(app_db[1])
    assert len(values) == 3 and all(v.startswith(f"pxs1:{a.id}:") for v in values), values
    dump = pg_dump(app_db[1], app_db[2])
    assert "pxs1:" in dump and "CREATE TABLE" in dump
    for m in MARKERS:
        assert m not in dump, "a secret is readable in pg_dump"
    with support.start_server(env=env_for(app_db, meta, a), name="pixtrackd (key a, restarted)") as two:
        cl = Client(two.port)
        pix_reaches_the_gateway_with(cl, marked_fakes, bot.id)
        pageview_reaches_meta_with(cl, two, meta, bot)
        cl.close()
        assert f"key_id={a.id}" in two.log()
    assert_log_clean(one, two)
    # The server ran as a role that is no superuser.
    assert psql(f"SELECT rolsuper::text FROM pg_roles WHERE rolname = '{app_db[2]}'") == "false"


def test_a_wrong_or_missing_key_fails_startup_naming_the_key_id(app_db, keys, meta):
    a, stranger = keys["a"], keys["stranger"]
    assert any(v.startswith(f"pxs1:{a.id}:") for v in stored(app_db[1])), "the first test stores values under key a"
    res = run_pixtrackd(env_for(app_db, meta, stranger))
    assert res.returncode == 2, res.stderr[-800:]
    assert a.id in res.stderr and "cannot be opened" in res.stderr and stranger.id in res.stderr, res.stderr[-800:]
    res = run_pixtrackd(env_for(app_db, meta, None))
    assert res.returncode == 2 and "PIXTRACK_SECRETS_KEY_FILE is not set" in res.stderr and a.id in res.stderr, res.stderr[-800:]
    bad = a.path.parent / "short.key"
    bad.write_text(base64.b64encode(b"too short").decode())
    env = env_for(app_db, meta, None)
    env["PIXTRACK_SECRETS_KEY_FILE"] = str(bad)
    res = run_pixtrackd(env)
    assert res.returncode == 2 and str(bad) in res.stderr and "32 bytes" in res.stderr, res.stderr[-800:]
    assert base64.b64encode(b"too short").decode() not in res.stderr + res.stdout


def test_rotation_re_seals_everything_under_the_new_key(app_db, keys, meta, marked_fakes):
    a, b = keys["a"], keys["b"]
    # A second bot so the rotation has several rows.
    with support.start_server(env=env_for(app_db, meta, a), name="pixtrackd (before rotation)") as s:
        cl = Client(s.port)
        marked_bot(cl, marked_fakes)
        cl.close()
    before = stored(app_db[1])
    assert before and all(v.startswith(f"pxs1:{a.id}:") for v in before)
    # Step 1 of the procedure: an instance with the new key and the old one keeps serving
    # through the rotation.
    serving = support.start_server(env=env_for(app_db, meta, b, [a]), name="pixtrackd (serving during rotation)")
    res = run_pixtrackd(env_for(app_db, meta, b, [a]), "rotate-secrets")
    assert res.returncode == 0, res.stdout + res.stderr[-800:]
    cl = Client(serving.port)
    for bot_id in [int(x) for x in psql("SELECT id FROM bots ORDER BY id", app_db[1]).split()]:
        pix_reaches_the_gateway_with(cl, marked_fakes, bot_id)
    cl.close()
    support.stop_and_check(serving)
    assert_log_clean(serving)
    assert f"{len(before)} values to re-seal under key id {b.id}" in res.stdout, res.stdout
    assert f"done: {len(before)} re-sealed, 0 unusable, 0 not under key id {b.id}" in res.stdout, res.stdout
    after = stored(app_db[1])
    assert len(after) == len(before) and all(v.startswith(f"pxs1:{b.id}:") for v in after), after
    # Resumable and idempotent: a second run finds nothing to do.
    again = run_pixtrackd(env_for(app_db, meta, b, [a]), "rotate-secrets")
    assert again.returncode == 0 and "0 values to re-seal" in again.stdout, again.stdout
    # The new key alone opens everything; the old one alone no longer starts.
    with support.start_server(env=env_for(app_db, meta, b), name="pixtrackd (key b)") as s:
        cl = Client(s.port)
        for bot_id in [int(x) for x in psql("SELECT id FROM bots ORDER BY id", app_db[1]).split()]:
            pix_reaches_the_gateway_with(cl, marked_fakes, bot_id)
        cl.close()
    assert_log_clean(s)
    res = run_pixtrackd(env_for(app_db, meta, a))
    assert res.returncode == 2 and b.id in res.stderr, res.stderr[-800:]
    for m in MARKERS:
        assert m not in res.stdout + res.stderr and m not in again.stdout + again.stderr


def test_a_value_that_does_not_open_is_never_sent(app_db, keys, meta, marked_fakes):
    """Bot y's envelopes copied onto bot x: valid under the key, but bound to y's row (AAD), so
    they do not open for x, and nothing is sent with them."""
    b = keys["b"]
    with support.start_server(env=env_for(app_db, meta, b), name="pixtrackd (swapped values)") as s:
        cl = Client(s.port)
        x, y = marked_bot(cl, marked_fakes), marked_bot(cl, marked_fakes)
        psql(f"UPDATE bots x SET gateway_credentials = y.gateway_credentials, capi_token = y.capi_token "
             f"FROM bots y WHERE x.id = {x.id} AND y.id = {y.id}", app_db[1])
        # Creates only: the reconciler keeps polling the earlier tests' charges meanwhile.
        def creates():
            return [r for r in marked_fakes.requests("paradise") if r["method"] == "POST"]
        sent_before = len(creates())
        with pytest.raises(grpc.RpcError) as e:
            cl.generate(x.id, unique_id(), 1500)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value
        assert "cannot be used" in e.value.details() and "nothing was sent" in e.value.details(), e.value.details()
        assert len(creates()) == sent_before, "a charge was asked for with a value that did not open"
        assert int(psql(f"SELECT count(*) FROM payments WHERE bot_id = {x.id}", app_db[1])) == 0
        # The Meta token: x's PageView is parked with the reason, never posted.
        slug = f"sw-{unique_id()}"
        cl.track.UpsertSlug(tpb.UpsertSlugRequest(slug=tpb.Slug(slug=slug, bots=[tpb.SlugBot(bot_id=x.id, enabled=True)],
                                                                enabled=True)), timeout=10)
        http_request(s.port, "GET", f"/go/{slug}", {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"})
        reason = wait_until(lambda: psql(f"SELECT last_error FROM meta_events WHERE pixel_id = '{x.meta_pixel_id}' "
                                         "AND status = 'parked'", app_db[1]), timeout=15, what="the PageView parked")
        assert "cannot be used" in reason and b.id in reason, reason
        assert not [r for r in meta.requests(x.meta_pixel_id)], "the fake Meta got a request for the pixel"
        # y still works.
        pix_reaches_the_gateway_with(cl, marked_fakes, y.id)
        cl.close()
        assert "event=secret_unusable" in s.log()
    assert_log_clean(s)


def test_plaintext_values_are_sealed_at_first_start_by_instances_starting_together(app_db, keys, meta, marked_fakes):
    """Rows as an older version wrote them (plaintext, the credentials as JSON text) are sealed by
    the first start with a key; two instances starting at once share the work."""
    b = keys["b"]
    ids = [unique_id() for _ in range(5)]
    creds = '{"api_key": "%s", "product_hash": "prod_1"}' % GATEWAY_KEY
    for bid in ids:
        psql(f"INSERT INTO bots (id, telegram_username, gateway_plugin, gateway_base_url, gateway_credentials, capi_token, "
             f"meta_pixel_id) VALUES ({bid}, 'plain{bid}', 'paradise', '{marked_fakes.base}/paradise/api/v1', '{creds}', "
             f"'{CAPI_TOKEN}', '{bid}')", app_db[1])
    first = support.Server(env=env_for(app_db, meta, b), name="pixtrackd (seal 1)").spawn()
    second = support.Server(env=env_for(app_db, meta, b), name="pixtrackd (seal 2)").spawn()
    try:
        for s in (first, second):
            wait_until(lambda: s.port is not None or not s.alive(), timeout=30, what=f"{s.name} listening")
            assert s.alive(), s.log()
        values = stored(app_db[1])
        assert values and all(v.startswith(f"pxs1:{b.id}:") for v in values), values
        dump = pg_dump(app_db[1], app_db[2])
        assert GATEWAY_KEY not in dump and CAPI_TOKEN not in dump
        cl = Client(first.port)
        pix_reaches_the_gateway_with(cl, marked_fakes, ids[0])
        cl.close()
        assert "event=secrets_sealed" in first.log() + second.log()
    finally:
        for s in (first, second):
            if s.alive():
                support.stop_and_check(s)
    assert_log_clean(first, second)


def test_without_a_key_a_fresh_database_starts_and_refuses_to_store_secrets(meta):
    env = payment_env(new_schema(), meta, PIXTRACK_SECRETS_KEY_FILE="")
    with support.start_server(env=env, name="pixtrackd (no key)") as s:
        assert "event=secrets_key_missing" in s.log()
        cl = Client(s.port)
        with pytest.raises(grpc.RpcError) as e:
            cl.bot("paradise", "http://127.0.0.1:9", {"api_key": GATEWAY_KEY})
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "PIXTRACK_SECRETS_KEY_FILE" in e.value.details()
        # A bot without secrets is fine.
        assert cl.bot("", "", None).id
        cl.close()
    assert_log_clean(s)
