"""TLS on both listeners (--tls-cert/--tls-key): ALPN h2 and http/1.1, every HTTP route over
HTTP/2 and HTTP/1.1 with curl, a stock grpcio client, `pixtrack --tls --ca`, a real headless
Chromium, certificate reload on SIGHUP (a bad file keeps the old certificate), and clients that
do not speak TLS (told so in their own protocol), send garbage or nothing (closed in time).

Certificates are made here with the openssl command (Debian package `openssl`): a throwaway CA
and a leaf for localhost and 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import support
from tracking_support import FakeMeta, http_request, new_schema, server_env, unique_id, wait_until

from pixtrack.v1 import tracking_pb2 as pb, tracking_pb2_grpc
from test_go_page import Stand, chrome

SECRET = "tls-webhook-secret-5e0c2b9d71a4f3e8"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=PixTrack interop CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)


def make_leaf(d: Path, name: str, cn: str) -> tuple[Path, Path]:
    """A certificate for localhost/127.0.0.1 signed by the CA in `d`: (`name`.pem, `name`.key)."""
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.cnf", "-out", f"{name}.pem", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def peer_subject(port: int, ca: Path) -> str:
    """The CN the server presents to a new connection."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((support.HOST, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
        subject = dict(x[0] for x in s.getpeercert()["subject"])
        return subject["commonName"]


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    make_ca(d)
    cert, key = make_leaf(d, "server", "pixtrack-first")
    meta = FakeMeta()
    stand = Stand()  # "Telegram" and the pixel script, on loopback
    s = support.start_server("--public-port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--header-timeout-ms", "1500",
                             env=server_env(new_schema(), meta, PIXTRACK_META_SENDER="0", PIXTRACK_WEBHOOK_SECRETS=f"sandbox:{SECRET}",
                                            PIXTRACK_TELEGRAM_BASE_URL=f"http://127.0.0.1:{stand.port}/tg",
                                            PIXTRACK_PIXEL_SCRIPT_URL=f"http://127.0.0.1:{stand.port}/pixel.js"),
                             name="pixtrackd (TLS)")
    s.public_port = support.public_port(s)
    s.dir, s.ca, s.cert, s.key, s.stand = d, d / "ca.pem", cert, key, stand
    yield s
    support.stop_and_check(s)
    meta.stop()
    stand.close()


def new_slug(s, mode=pb.SLUG_MODE_REDIRECT) -> tuple[int, str]:
    """A bot and a slug that sends visitors to it, made over TLS."""
    with secure_channel(s) as ch:
        stub = tracking_pb2_grpc.TrackingServiceStub(ch)
        bid = unique_id()
        stub.UpsertBot(pb.UpsertBotRequest(id=bid, telegram_username=f"tls{bid}", meta_pixel_id="1234567890", enabled=True), timeout=10)
        assert stub.GetBot(pb.GetBotRequest(id=bid), timeout=10).telegram_username == f"tls{bid}"
        slug = f"tls-{bid}"
        stub.UpsertSlug(pb.UpsertSlugRequest(slug=pb.Slug(slug=slug, mode=mode, enabled=True, bots=[pb.SlugBot(bot_id=bid, enabled=True)])),
                        timeout=10)
    return bid, slug


def secure_channel(s) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=s.ca.read_bytes())
    return grpc.secure_channel(f"localhost:{s.port}", creds)


def test_grpcio_calls_over_tls(tls):
    with secure_channel(tls) as ch:
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    new_slug(tls)  # UpsertBot, GetBot, UpsertSlug


@pytest.mark.parametrize("version,flag", [("2", "--http2"), ("1.1", "--http1.1")])
def test_every_http_route_answers_over_tls(tls, version, flag):
    bid, slug = new_slug(tls)
    _, page_slug = new_slug(tls, pb.SLUG_MODE_PAGE)
    base = f"https://localhost:{tls.port}"
    ca = ["--cacert", str(tls.ca), flag]

    def get(path: str, *extra: str) -> tuple[str, str, str]:
        r = curl(*ca, "-D", "-", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", *extra, base + path)
        assert r.returncode == 0, r.stderr
        head, _, tail = r.stdout.rpartition("\n")
        code, got = tail.split()
        assert got == version, (path, r.stdout)
        return code, head.lower(), r.stdout

    assert get("/healthz")[0] == "200"
    assert get("/readyz")[0] == "200"
    assert get("/metrics")[0] == "200"
    code, head, _ = get(f"/go/{slug}?fbclid=IwAR_tls", "-A", "curl/8")
    assert code == "302" and "set-cookie: _fbp=" in head and f"/tg/tls{bid}?start=" in head, head
    code, page, _ = get(f"/go/{page_slug}?fbclid=IwAR_tls", "-A", "Mozilla/5.0 Chrome/124.0")
    assert code == "200" and "content-security-policy:" in page, page  # the landing page
    assert get("/go/no-such-tls-slug", "-A", "Mozilla/5.0 Chrome/124.0")[0] == "404"
    token = head.split("?start=", 1)[1][:32]
    r = curl(*ca, "-X", "POST", "-H", "content-type: application/json", "--data", '{"fbp": "fb.1.1700000000000.123456789"}',
             "-w", " %{http_code}", base + f"/t/{token}/cookies")
    assert r.returncode == 0 and r.stdout.endswith(" 204"), r.stdout
    r = curl(*ca, "-X", "POST", "-H", "content-type: application/json", "--data", '{"action": "pay"}', "-w", " %{http_code}",
             base + f"/webhooks/sandbox/{SECRET}")
    assert r.returncode == 0 and "no route" not in r.stdout and r.stdout.split()[-1] in ("200", "400"), r.stdout
    # A Connect JSON call: the same handler as gRPC.
    r = curl(*ca, "-X", "POST", "-H", "content-type: application/json", "--data", "{}", base + "/grpc.health.v1.Health/Check")
    assert r.returncode == 0 and json.loads(r.stdout) == {"status": "SERVING"}, r.stdout


def test_the_public_listener_speaks_tls_too(tls):
    base = f"https://localhost:{tls.public_port}"
    r = curl("--cacert", str(tls.ca), "--http2", "-w", " %{http_code} %{http_version}", base + "/healthz")
    assert r.stdout.endswith(" 200 2"), (r.stdout, r.stderr)
    r = curl("--cacert", str(tls.ca), "--http2", "-o", "/dev/null", "-w", "%{http_code}", base + "/metrics")
    assert r.stdout == "404"


@pytest.mark.parametrize("offered,chosen", [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"),
                                            (["http/1.1"], "http/1.1"), (["spdy/3"], None), (None, None)])
def test_alpn_prefers_h2_and_goes_on_without_a_match(tls, offered, chosen):
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    if offered:
        ctx.set_alpn_protocols(offered)
    with socket.create_connection((support.HOST, tls.port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == chosen
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        if chosen != "h2":
            # No h2: the first bytes decide, so HTTP/1.1 works.
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nok\n"), data


def test_tls_1_1_and_older_are_refused(tls):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(tls.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection((support.HOST, tls.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")


def cli(*args: str) -> subprocess.CompletedProcess:
    binary = support.pixtrackd_path().parent / "pixtrack"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)


def test_the_cli_verifies_the_server(tls):
    ok = cli("health", "--addr", f"localhost:{tls.port}", "--ca", str(tls.ca))
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING", ok.stderr
    listed = cli("list", "--addr", f"127.0.0.1:{tls.port}", "--tls", "--ca", str(tls.ca))
    assert listed.returncode == 0 and "pixtrack.v1.TrackingService" in listed.stdout, listed.stderr
    # The system trust store does not know our CA.
    untrusted = cli("health", "--addr", f"localhost:{tls.port}", "--tls")
    assert untrusted.returncode == 64 + 14 and "certificate not trusted" in untrusted.stderr, untrusted.stderr
    wrong_name = cli("health", "--addr", f"localhost:{tls.port}", "--ca", str(tls.ca), "--tls-server-name", "pay.example.com")
    assert wrong_name.returncode == 64 + 14 and "hostname mismatch" in wrong_name.stderr, wrong_name.stderr
    plaintext = cli("health", "--addr", f"localhost:{tls.port}")
    assert plaintext.returncode == 64 + 14 and "this port speaks TLS" in plaintext.stderr, plaintext.stderr
    missing = cli("health", "--addr", f"localhost:{tls.port}", "--ca", str(tls.dir / "nope.pem"))
    assert missing.returncode != 0 and "cannot read it" in missing.stderr, missing.stderr


def test_the_cli_says_when_the_server_is_plaintext():
    s = support.start_server(name="pixtrackd (plaintext, for the TLS CLI)")
    try:
        r = cli("health", "--addr", f"127.0.0.1:{s.port}", "--tls")
        assert r.returncode == 64 + 14 and "does not speak TLS" in r.stderr, r.stderr
    finally:
        support.stop_and_check(s)


def test_plaintext_clients_are_told_in_their_protocol(tls):
    r = curl("-w", " %{http_code}", f"http://127.0.0.1:{tls.port}/healthz")
    assert r.stdout.endswith(" 400") and "this port speaks TLS" in r.stdout, r.stdout
    # An h2c client: SETTINGS, then a GOAWAY whose debug data says why, then the close.
    with socket.create_connection((support.HOST, tls.port), timeout=5) as raw:
        raw.sendall(support.PREFACE + support.frame(support.FRAME_SETTINGS, 0, 0, b""))
        data, closed = support.read_until_closed(raw, timeout=5)
    goaways = [f for f in support.parse_frames(data) if f.type == support.FRAME_GOAWAY]
    assert closed and goaways and b"this port speaks TLS" in goaways[0].payload[8:], data


def test_garbage_and_silence_are_cut_off(tls):
    before = support_metric(tls, "pixtrack_tls_handshake_failures_total")
    garbage = socket.create_connection((support.HOST, tls.port), timeout=5)
    garbage.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + os.urandom(64))
    data, closed = support.read_until_closed(garbage, timeout=5)
    assert closed, "a broken ClientHello must end the connection"
    silent = socket.create_connection((support.HOST, tls.port), timeout=5)
    t0 = time.monotonic()
    _, closed = support.read_until_closed(silent, timeout=10)
    waited = time.monotonic() - t0
    assert closed and waited < 1.5 + 3.5, f"a connection that never says hello was held {waited:.1f} s"
    support.figure(f"TLS: a silent connection closed after {waited:.1f} s (header timeout 1.5 s)")
    assert support_metric(tls, "pixtrack_tls_handshake_failures_total") >= before + 1
    with secure_channel(tls) as ch:
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def support_metric(s, prefix: str) -> float:
    r = curl("--cacert", str(s.ca), f"https://localhost:{s.port}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines() if line.startswith(prefix))


def test_sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one(tls):
    assert peer_subject(tls.port, tls.ca) == "pixtrack-first"
    open_channel = secure_channel(tls)
    health = health_pb2_grpc.HealthStub(open_channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    cert, key = make_leaf(tls.dir, "second", "pixtrack-second")
    original = tls.cert.read_bytes(), tls.key.read_bytes()
    try:
        tls.cert.write_bytes(cert.read_bytes())
        tls.key.write_bytes(key.read_bytes())
        tls.signal(signal.SIGHUP)
        wait_until(lambda: "event=tls_reloaded" in tls.log(), what="the reload log line")
        assert peer_subject(tls.port, tls.ca) == "pixtrack-second"
        assert peer_subject(tls.public_port, tls.ca) == "pixtrack-second"
        # The connection opened before the reload goes on.
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        # A half-written file: logged, and the certificate in use stays.
        tls.cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
        tls.signal(signal.SIGHUP)
        wait_until(lambda: "event=tls_reload_failed" in tls.log(), what="the failed reload log line")
        assert peer_subject(tls.port, tls.ca) == "pixtrack-second"
        # A key that belongs to another certificate is refused the same way.
        tls.cert.write_bytes(cert.read_bytes())
        tls.key.write_bytes(original[1])
        tls.signal(signal.SIGHUP)
        wait_until(lambda: tls.log().count("event=tls_reload_failed") >= 2, what="the mismatched key to be refused")
        assert "does not match" in tls.log()
        assert peer_subject(tls.port, tls.ca) == "pixtrack-second"
    finally:
        tls.cert.write_bytes(original[0])
        tls.key.write_bytes(original[1])
        tls.signal(signal.SIGHUP)
        open_channel.close()
    wait_until(lambda: peer_subject(tls.port, tls.ca) == "pixtrack-first", what="the original certificate back")
    assert tls.alive()


def test_startup_refuses_bad_tls_settings(tmp_path):
    make_ca(tmp_path)
    cert, key = make_leaf(tmp_path, "leaf", "leaf")
    for args, expected in [
        (["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)], "cannot read the TLS certificate chain"),
        (["--tls-cert", str(cert), "--tls-key", str(tmp_path / "ca.key")], "does not match"),
    ]:
        p = subprocess.run([str(support.pixtrackd_path()), "--port", "0", *args], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "DATABASE_URL": "postgresql://127.0.0.1:1/none"})
        assert p.returncode == 2 and expected in p.stderr, (args, p.returncode, p.stderr)
        assert "PRIVATE KEY" not in p.stderr


def test_headless_chromium_gets_h2_over_tls(tls):
    """A real browser: trusts only this server's key (by its SPKI hash), negotiates h2, and a
    page-mode /go visit reaches "Telegram" over TLS."""
    spki = subprocess.run(f"openssl x509 -in {tls.cert} -pubkey -noout | openssl pkey -pubin -outform der | "
                          "openssl dgst -sha256 -binary | base64", shell=True, check=True, capture_output=True, text=True).stdout.strip()
    browser = chrome(extra=[f"--ignore-certificate-errors-spki-list={spki}"])
    try:
        browser.get(f"https://127.0.0.1:{tls.port}/healthz")
        protocol = wait_until(lambda: browser.execute_script(
            "const e = performance.getEntriesByType('navigation')[0]; return e && e.responseEnd > 0 && e.nextHopProtocol"),
            what="the page to load")
        assert protocol == "h2"
        assert "ok" in browser.page_source
        support.figure(f"TLS: headless Chromium negotiated {protocol} (trusting the key by SPKI hash)")
        _, slug = new_slug(tls, pb.SLUG_MODE_PAGE)
        arrived = len(tls.stand.arrivals)
        browser.get(f"https://127.0.0.1:{tls.port}/go/{slug}?fbclid=IwAR_tls_browser")
        wait_until(lambda: len(tls.stand.arrivals) > arrived, timeout=10, what="the visitor to reach Telegram")
        assert tls.stand.arrivals[-1][1].startswith(f"/tg/tls{slug.split('-')[1]}?start=")
    finally:
        browser.quit()


def test_pixtrackd_reaches_redis_over_tls(tmp_path):
    """REDIS_URL=rediss://… with PIXTRACK_REDIS_CA_FILE: the server is ready (Redis answered
    through the tunnel) and a click, which uses Redis, goes through."""
    make_ca(tmp_path)
    cert, key = make_leaf(tmp_path, "redis", "redis")
    port = support.free_port()
    redis = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                              "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
                              "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = FakeMeta()
    s = None
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "--tls", "--cacert", str(tmp_path / "ca.pem"), "ping"],
                                          capture_output=True, text=True).stdout.strip() == "PONG", what="the TLS redis-server")
        s = support.start_server(env={**server_env(new_schema(), meta, PIXTRACK_META_SENDER="0"),
                                      "REDIS_URL": f"rediss://localhost:{port}/0", "PIXTRACK_REDIS_CA_FILE": str(tmp_path / "ca.pem")},
                                 name="pixtrackd (rediss://)")
        wait_until(lambda: http_request(s.port, "GET", "/readyz")[0] == 200, what="/readyz with Redis over TLS")
        ch = support.channel(s.port)
        stub = tracking_pb2_grpc.TrackingServiceStub(ch)
        bid = unique_id()
        stub.UpsertBot(pb.UpsertBotRequest(id=bid, telegram_username=f"rtls{bid}", meta_pixel_id="1234567890", enabled=True), timeout=10)
        stub.UpsertSlug(pb.UpsertSlugRequest(slug=pb.Slug(slug=f"rtls-{bid}", enabled=True, bots=[pb.SlugBot(bot_id=bid, enabled=True)])),
                        timeout=10)
        status, headers, _ = http_request(s.port, "GET", f"/go/rtls-{bid}?fbclid=IwAR_rediss", {"User-Agent": "curl/8"})
        assert status == 302, status
        token = dict(headers)["location"].split("start=", 1)[1][:32]
        # The token is cached in Redis by the click; the key is there, seen through redis-cli.
        keys = subprocess.run(["redis-cli", "-p", str(port), "--tls", "--cacert", str(tmp_path / "ca.pem"), "--scan"],
                              capture_output=True, text=True).stdout
        assert keys.strip(), "the click left nothing in Redis"
        assert stub.GetTrackingData(pb.GetTrackingDataRequest(token=token), timeout=5).token == token
        ch.close()
    finally:
        if s is not None:
            support.stop_and_check(s)
        meta.stop()
        redis.terminate()
        redis.wait(timeout=10)
