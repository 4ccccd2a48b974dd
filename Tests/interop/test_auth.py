"""PIXTRACK_RPC_TOKEN and the refusal to listen beyond loopback without it."""

import secrets
import socket
import time

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc

import support

TOKEN = "tok-" + secrets.token_hex(16)
WRONG = "wrong-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def auth_server():
    # Debug logging, so that a token leaking into any log line shows up.
    server = support.start_server("--enable-test-service",
                                  env={"PIXTRACK_RPC_TOKEN": TOKEN, "PIXTRACK_LOG_LEVEL": "debug"},
                                  name="pixtrackd (token)")
    yield server
    support.stop_and_check(server)
    log = server.log()
    assert TOKEN not in log, "the RPC token appears in the server log"
    assert WRONG not in log, "a presented (wrong) token appears in the server log"


@pytest.fixture
def stub(auth_server):
    with support.channel(auth_server.port) as ch:
        yield testing_pb2_grpc.TestServiceStub(ch)


@pytest.mark.parametrize("metadata", [
    None,
    [("authorization", f"Bearer {WRONG}")],
    [("authorization", TOKEN)],                 # no "Bearer " scheme
    [("authorization", f"Basic {TOKEN}")],
    [("authorization", f"Bearer {TOKEN}x")],    # a longer token is a different token
    [("authorization", f"Bearer {TOKEN[:-1]}")],
], ids=["missing", "wrong", "no-scheme", "basic", "longer", "prefix"])
def test_echo_without_the_right_token_is_unauthenticated(stub, metadata):
    with pytest.raises(grpc.RpcError) as e:
        stub.Echo(testing_pb2.EchoRequest(text="x"), metadata=metadata, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value


def test_sleep_needs_the_token_too(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Sleep(testing_pb2.SleepRequest(millis=1), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value


def test_right_token_is_accepted(stub):
    resp = stub.Echo(testing_pb2.EchoRequest(text="ok"),
                     metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
    assert resp.text == "ok"


def test_health_and_reflection_need_no_token(auth_server):
    with support.channel(auth_server.port) as ch:
        assert support.health_check(ch).status == 1
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert "pixtrack.v1.TrackingService" in services, services


def test_token_is_not_in_the_log_so_far(auth_server):
    log = auth_server.log()
    assert TOKEN not in log and WRONG not in log


def _wait_exit(server, timeout):
    try:
        return server.wait(timeout)
    except Exception:  # noqa: BLE001
        server.kill()
        raise AssertionError(f"{server.name} still running after {timeout} s:\n{server.log()}")


def test_non_loopback_bind_without_token_is_refused():
    server = support.Server("--host", "0.0.0.0", "--port", "0", name="pixtrackd (0.0.0.0, no token)")
    server.spawn()
    rc = _wait_exit(server, 10)
    log = server.log()
    assert rc != 0, f"started on 0.0.0.0 without a token:\n{log}"
    assert "event=listening" not in log, log
    low = log.lower()
    assert "token" in low or "allow-unauthenticated" in low, f"no clear reason given:\n{log}"


def test_non_loopback_bind_allowed_with_flag_logs_warning():
    server = support.start_server("--host", "0.0.0.0", "--allow-unauthenticated",
                          name="pixtrackd (0.0.0.0, --allow-unauthenticated)")
    try:
        deadline = time.monotonic() + 2
        while "warning" not in server.log().lower() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "warning" in server.log().lower(), server.log()
        support.assert_serving(server)
    finally:
        support.stop_and_check(server)


def test_non_loopback_bind_with_token_starts():
    server = support.start_server("--host", "0.0.0.0", env={"PIXTRACK_RPC_TOKEN": TOKEN},
                          name="pixtrackd (0.0.0.0, token)")
    try:
        support.assert_serving(server)
    finally:
        support.stop_and_check(server)
    assert TOKEN not in server.log()


def test_ipv6_loopback_needs_no_token():
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 here")
    server = support.start_server("--host", "::1", "--enable-test-service", name="pixtrackd (::1)")
    try:
        with grpc.insecure_channel(f"[::1]:{server.port}") as ch:
            assert support.health_check(ch).status == 1
    finally:
        support.stop_and_check(server)
