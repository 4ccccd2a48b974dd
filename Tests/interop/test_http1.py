"""The HTTP/1.1 side door on the gRPC port: routes, Connect-protocol JSON calls, limits and
bad input. Driven with curl and raw sockets; gRPC results come from stock grpcio."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import grpc
import pytest

import support

from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc


@pytest.fixture(scope="module")
def srv():
    server = support.start_server("--enable-test-service", "--max-message-bytes", "65536",
                                  "--header-timeout-ms", "1000", "--body-timeout-ms", "1500",
                                  name="pixtrackd (http1)")
    yield server
    support.stop_and_check(server)


def curl(srv, path, *args, data=None, timeout=10):
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout),
           f"http://{support.HOST}:{srv.port}{path}", *args]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    res = subprocess.run(cmd, input=data if isinstance(data, bytes) else (data or "").encode(),
                         capture_output=True, timeout=timeout + 5)
    assert res.returncode == 0, f"curl failed: {res.stderr.decode()}"
    body, _, code = res.stdout.rpartition(b"\n")
    return int(code), body


def post_json(srv, method, payload, *args):
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return curl(srv, "/" + method, "-H", "content-type: application/json", *args, data=data)


def raw(srv, data: bytes, timeout=5.0):
    with socket.create_connection((support.HOST, srv.port), timeout=timeout) as s:
        s.sendall(data)
        got, closed = support.read_until_closed(s, timeout)
    return got, closed


# --- routes ---------------------------------------------------------------------------------------

def test_healthz_and_readyz(srv):
    assert curl(srv, "/healthz") == (200, b"ok\n")
    code, body = curl(srv, "/readyz")
    assert code == 200, body


def test_metrics_count_calls_by_method_and_status(srv):
    with support.channel(srv.port) as ch:
        support.health_check(ch)
        stub = testing_pb2_grpc.TestServiceStub(ch)
        with pytest.raises(grpc.RpcError):
            stub.Echo(testing_pb2.EchoRequest(fail_code=5, fail_message="x"), timeout=5)
    code, body = curl(srv, "/metrics")
    text = body.decode()
    assert code == 200
    assert 'pixtrack_rpc_calls_total{method="/grpc.health.v1.Health/Check",code="OK",transport="grpc"}' in text
    assert 'pixtrack_rpc_calls_total{method="/pixtrack.testing.v1.TestService/Echo",code="NOT_FOUND",transport="grpc"}' in text
    assert 'pixtrack_rpc_duration_seconds_bucket{method="/grpc.health.v1.Health/Check",le="+Inf"}' in text
    assert "pixtrack_rpc_in_flight" in text
    assert "# TYPE pixtrack_rpc_calls_total counter" in text


def test_unknown_route_is_404_json(srv):
    code, body = curl(srv, "/nope")
    assert code == 404
    assert json.loads(body)["code"] == "not_found"


def test_wrong_method_on_a_route_is_405(srv):
    code, body = curl(srv, "/healthz", "-X", "POST", data="x")
    assert code == 405
    assert json.loads(body)["code"] == "unimplemented"


# --- Connect JSON calls ---------------------------------------------------------------------------

def test_json_call_matches_the_grpc_result(srv):
    req = testing_pb2.EchoRequest(text="olá", payload=b"\x00\x01\xff")
    with support.channel(srv.port) as ch:
        via_grpc = testing_pb2_grpc.TestServiceStub(ch).Echo(req, timeout=5, metadata=[("x-trace", "t1")])
    code, body = post_json(srv, "pixtrack.testing.v1.TestService/Echo",
                           {"text": "olá", "payload": "AAH/"}, "-H", "x-trace: t1")
    assert code == 200, body
    got = json.loads(body)
    assert got["text"] == via_grpc.text == "olá"
    assert got["payload"] == "AAH/"
    assert {"key": "x-trace", "value": "t1"} in got["metadata"]
    assert any(m.key == "x-trace" and m.value == "t1" for m in via_grpc.metadata)


def test_health_over_json(srv):
    code, body = post_json(srv, "grpc.health.v1.Health/Check", {})
    assert (code, json.loads(body)) == (200, {"status": "SERVING"})


def test_binary_proto_body(srv):
    req = testing_pb2.EchoRequest(text="bin").SerializeToString()
    code, body = curl(srv, "/pixtrack.testing.v1.TestService/Echo", "-H", "content-type: application/proto", data=req)
    assert code == 200
    assert testing_pb2.EchoResponse.FromString(body).text == "bin"


@pytest.mark.parametrize("payload,status,code,fragment", [
    ('{"text": "a", ', 400, "invalid_argument", "invalid JSON"),
    ('{"text": 5}', 400, "invalid_argument", "text"),
    ('{"failCode": "abc"}', 400, "invalid_argument", "failCode"),
    ('{"nope": 1}', 400, "invalid_argument", "nope"),
    ('[1,2]', 400, "invalid_argument", ""),
    ('{"failCode": 5, "failMessage": "pagamento não encontrado"}', 404, "not_found", "pagamento não encontrado"),
    ('{"failCode": 16, "failMessage": "who"}', 401, "unauthenticated", "who"),
])
def test_json_errors(srv, payload, status, code, fragment):
    got_status, body = post_json(srv, "pixtrack.testing.v1.TestService/Echo", payload)
    err = json.loads(body)
    assert (got_status, err["code"]) == (status, code), body
    assert fragment in err["message"]


def test_unknown_rpc_over_json_is_unimplemented(srv):
    code, body = post_json(srv, "pixtrack.v1.PaymentService/NoSuchMethod", {})
    assert code == 501 and json.loads(body)["code"] == "unimplemented"
    code, body = post_json(srv, "no.Such/Method", {})
    assert code == 501 and json.loads(body)["code"] == "unimplemented"


def test_unsupported_content_type_is_415(srv):
    code, body = curl(srv, "/grpc.health.v1.Health/Check", "-H", "content-type: text/plain", data="{}")
    assert code == 415 and json.loads(body)["code"] == "invalid_argument"


def test_connect_timeout_header_is_a_deadline(srv):
    t0 = time.monotonic()
    code, body = post_json(srv, "pixtrack.testing.v1.TestService/Sleep", {"millis": 10000},
                           "-H", "connect-timeout-ms: 200")
    assert (code, json.loads(body)["code"]) == (504, "deadline_exceeded")
    assert time.monotonic() - t0 < 4


def test_auth_applies_to_json_calls_but_not_health():
    with support.start_server("--enable-test-service", env={"PIXTRACK_RPC_TOKEN": "s3cret-token"},
                              name="pixtrackd (http1 auth)") as s:
        code, body = post_json(s, "pixtrack.testing.v1.TestService/Echo", {"text": "x"})
        assert code == 401 and json.loads(body)["code"] == "unauthenticated"
        code, _ = post_json(s, "pixtrack.testing.v1.TestService/Echo", {"text": "x"},
                            "-H", "authorization: Bearer s3cret-token")
        assert code == 200
        assert post_json(s, "grpc.health.v1.Health/Check", {})[0] == 200
        assert "s3cret-token" not in s.log()


# --- framing, limits, bad input -------------------------------------------------------------------

def test_keep_alive_and_pipelining_answer_in_order(srv):
    reqs = b"".join(f"GET /healthz?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3))
    reqs += b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got, closed = raw(srv, reqs)
    assert got.count(b"HTTP/1.1 200 OK") == 3
    assert got.rfind(b"HTTP/1.1 404") > got.rfind(b"HTTP/1.1 200")
    assert closed


def test_thousands_of_pipelined_requests_answered_at_once_keep_the_server_up(srv):
    # A 404 never suspends, so each one is answered while its read is still being handled:
    # one 64 KiB read holds ~2,000 of them, and answering each must not nest a call deeper.
    n = 20000
    reqs = b"".join(f"GET /nope-{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(n))
    reqs += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got = bytearray()
    with socket.create_connection((support.HOST, srv.port), timeout=30) as s:
        # Read while writing: the server stops reading while its answers go unread.
        reader = threading.Thread(target=lambda: got.extend(support.read_until_closed(s, 60)[0]))
        reader.start()
        s.sendall(reqs)
        reader.join(70)
    assert got.count(b"HTTP/1.1 404") == n
    assert got.rfind(b"HTTP/1.1 200") > got.rfind(b"HTTP/1.1 404")
    code, _ = curl(srv, "/healthz")
    assert code == 200


def test_chunked_body(srv):
    body = b'{"text":"chunked"}'
    req = (b"POST /pixtrack.testing.v1.TestService/Echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
           + b"0\r\n\r\n")
    got, _ = raw(srv, req)
    assert got.startswith(b"HTTP/1.1 200")
    assert b'"text":"chunked"' in got


def test_expect_100_continue_is_answered_quickly(srv):
    t0 = time.monotonic()
    code, body = post_json(srv, "pixtrack.testing.v1.TestService/Echo", {"text": "y" * 3000},
                           "-H", "Expect: 100-continue", "--expect100-timeout", "10")
    assert code == 200
    assert time.monotonic() - t0 < 5, "curl waited (10 s) for 100 Continue"


def test_oversized_body_is_413(srv):
    code, body = post_json(srv, "pixtrack.testing.v1.TestService/Echo", {"text": "z" * 70000})
    assert code == 413 and json.loads(body)["code"] == "resource_exhausted"


def test_oversized_headers_are_431(srv):
    got, closed = raw(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431"), got[:100]
    assert closed


@pytest.mark.parametrize("bad,status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/9.9\r\n\r\n", b"505"),
    (b"GET /healthz HTTP/1.1\r\nBad Header Without Colon\r\n\r\n", b"400"),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
])
def test_malformed_requests_get_4xx_json_and_close(srv, bad, status):
    got, closed = raw(srv, bad)
    assert got.startswith(b"HTTP/1.1 " + status), got[:100]
    assert b'{"code":"' in got
    assert closed
    support.assert_serving(srv)


def test_body_longer_than_content_length_is_a_second_bad_request(srv):
    got, closed = raw(srv, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabEXTRA STUFF\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 405")
    assert b"HTTP/1.1 400" in got
    assert closed


def test_body_shorter_than_content_length_times_out_with_408(srv):
    t0 = time.monotonic()
    got, closed = raw(srv, b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{}", timeout=6)
    assert got.startswith(b"HTTP/1.1 408"), got[:100]
    assert closed and time.monotonic() - t0 < 4


def test_slowloris_headers_are_cut_off(srv):
    with socket.create_connection((support.HOST, srv.port), timeout=6) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        for _ in range(10):
            time.sleep(0.25)
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        got, closed = support.read_until_closed(s, 5)
    assert closed
    assert got.startswith(b"HTTP/1.1 408") or got == b""
    assert time.monotonic() - t0 < 4.5
    support.assert_serving(srv)


def test_non_utf8_and_odd_paths_never_break_the_server(srv):
    for path in [b"/go/%ff%fe", b"/\xff\xfe", b"/%", b"/../../etc/passwd", b"/" + b"a" * 8000]:
        got, _ = raw(srv, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 4"), (path[:30], got[:80])
    support.assert_serving(srv)
