"""Every HTTP route over HTTP/2 too (browsers and gateways negotiate h2 once TLS is in front):
the same handlers as HTTP/1.1, chosen by method and content-type, checked with curl
(--http2-prior-knowledge) and a raw h2 client."""

from __future__ import annotations

import json
import subprocess
import urllib.parse

import pytest

import support
from tracking_support import FakeMeta, new_schema, server_env, unique_id

from pixtrack.v1 import tracking_pb2 as pb, tracking_pb2_grpc

SECRET = "h2-routes-secret-7c1e0b9a5d3f2468"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


@pytest.fixture(scope="module")
def srv():
    meta = FakeMeta()
    s = support.start_server("--public-port", "0",
                             env=server_env(new_schema(), meta, PIXTRACK_META_SENDER="0",
                                            PIXTRACK_WEBHOOK_SECRETS=f"sandbox:{SECRET}"), name="pixtrackd (http routes over h2)")
    s.public_port = support.public_port(s)
    yield s
    support.stop_and_check(s)
    meta.stop()


def curl(port: int, path: str, *args: str) -> tuple[int, dict, bytes, str]:
    """(status, headers, body, protocol) of one request over h2c prior knowledge."""
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/stdout", "--max-time", "10",
                        *args, f"http://{support.HOST}:{port}{path}"], capture_output=True, timeout=20)
    out = r.stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    proto, status = lines[0].split(" ")[0], int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return status, headers, body, proto


def test_healthz_metrics_and_readyz_over_h2(srv):
    status, _, body, proto = curl(srv.port, "/healthz")
    assert proto == "HTTP/2" and status == 200, (proto, status, body)
    status, h, body, _ = curl(srv.port, "/metrics")
    assert status == 200 and b"pixtrack_connections_open" in body and h["content-type"].startswith("text/plain")
    assert curl(srv.port, "/readyz")[0] in (200, 503)
    assert curl(srv.port, "/no/such/route")[0] == 404
    # HEAD: the headers without the body.
    with support.H2Client(srv.port) as c:
        st = c.wait(c.request("/healthz", method="HEAD", content_type=None))
    assert st.http_status == 200 and st.data == b"" and st.ended, st.describe()


def test_go_redirect_with_cookie_over_h2(srv):
    with support.channel(srv.port) as ch:
        stub = tracking_pb2_grpc.TrackingServiceStub(ch)
        bid = unique_id()
        stub.UpsertBot(pb.UpsertBotRequest(id=bid, telegram_username=f"h2bot{bid}", enabled=True), timeout=10)
        slug = f"h2-{bid}"
        stub.UpsertSlug(pb.UpsertSlugRequest(slug=pb.Slug(slug=slug, mode=pb.SLUG_MODE_REDIRECT, enabled=True,
                                                          bots=[pb.SlugBot(bot_id=bid, enabled=True)])), timeout=10)
    for port in (srv.port, srv.public_port):
        status, h, _, proto = curl(port, f"/go/{slug}?fbclid=IwAR_h2_test", "-A", UA)
        assert proto == "HTTP/2" and status == 302, (status, h)
        assert h["location"].startswith(f"https://t.me/h2bot{bid}?start=")
        assert len(urllib.parse.parse_qs(urllib.parse.urlsplit(h["location"]).query)["start"][0]) == 32
        assert h["set-cookie"].startswith("_fbp=fb.1.")


def test_connect_json_call_over_h2(srv):
    status, h, body, _ = curl(srv.port, "/grpc.health.v1.Health/Check", "-H", "content-type: application/json", "--data", "{}")
    assert status == 200 and json.loads(body) == {"status": "SERVING"}, (status, body)


def test_webhooks_over_h2(srv):
    status, _, body, _ = curl(srv.public_port, f"/webhooks/sandbox/{SECRET}", "-H", "content-type: application/json",
                              "--data", '{"action": "pay", "reference": "PAY-1"}')
    assert status in (200, 400), (status, body)  # stored; parsed by the sandbox when a bot uses it
    status, _, _, _ = curl(srv.port, "/webhooks/sandbox/wrong-secret-000000000000000000000000", "--data", "{}")
    assert status == 404


def test_request_body_limit_over_h2(srv):
    with support.H2Client(srv.port) as c:
        sid = c.request("/webhooks/sandbox/" + SECRET, b"x" * (5 * 1024 * 1024), content_type="application/json", end_stream=True)
        st = c.wait(sid, timeout=10)
    assert st.http_status == 413, st.describe()
    support.assert_serving(srv)


def test_public_port_over_h2_serves_only_public_routes(srv):
    assert curl(srv.public_port, "/healthz")[0] == 200
    assert curl(srv.public_port, "/metrics")[0] == 404
    status, _, _, _ = curl(srv.public_port, "/grpc.health.v1.Health/Check", "-H", "content-type: application/json", "--data", "{}")
    assert status == 404
