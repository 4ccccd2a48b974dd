"""--public-port: the listener a reverse proxy exposes serves the public HTTP routes only
(/go/{slug}, /t/{token}/cookies, /webhooks/{gateway}/{secret}, /healthz); RPCs over gRPC or
Connect, reflection, /metrics and /readyz are not there. The main port keeps everything."""

from __future__ import annotations

import http.client
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import support


@pytest.fixture(scope="module")
def srv():
    s = support.start_server("--public-port", "0", env={"PIXTRACK_WEBHOOK_SECRETS": "sandbox:public-port-secret-3c9e1a7f5b2d80e4"},
                             name="pixtrackd (public port)")
    s.public_port = support.public_port(s)
    yield s
    support.stop_and_check(s)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(support.HOST, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def test_the_public_routes_are_served(srv):
    assert request(srv.public_port, "GET", "/healthz")[0] == 200
    # An unknown slug is the /go handler's own answer, not "no route".
    status, body = request(srv.public_port, "GET", "/go/no-such-slug")
    assert status in (302, 404) and b"no route for" not in body, (status, body)
    status, body = request(srv.public_port, "POST", "/webhooks/sandbox/public-port-secret-3c9e1a7f5b2d80e4", b'{"action": "pay"}',
                           {"Content-Type": "application/json"})
    assert b"no route for" not in body, (status, body)
    assert status in (200, 400), (status, body)
    status, body = request(srv.public_port, "POST", "/t/" + "a" * 32 + "/cookies", b"{}", {"Content-Type": "application/json"})
    assert b"no route for" not in body, (status, body)


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/metrics", None), ("GET", "/readyz", None),
    ("POST", "/pixtrack.v1.PaymentService/GetPayment", b'{"id": 1}'),
    ("POST", "/pixtrack.v1.TrackingService/UpsertBot", b'{"id": 1}'),
    ("POST", "/grpc.health.v1.Health/Check", b"{}"),
])
def test_everything_else_is_404_there(srv, method, path, body):
    status, data = request(srv.public_port, method, path, body, {"Content-Type": "application/json"} if body else {})
    assert status == 404, (status, data)
    assert json.loads(data)["code"] == "not_found"
    # The main port still serves it (GetPayment of a missing payment is the handler's 404).
    _, main = request(srv.port, method, path, body, {"Content-Type": "application/json"} if body else {})
    assert b"no route for" not in main, main


def test_grpc_is_refused_on_the_public_port(srv):
    with grpc.insecure_channel(f"{support.HOST}:{srv.public_port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value
    with support.channel(srv.port) as ch:
        assert support.health_check(ch).status == health_pb2.HealthCheckResponse.SERVING
