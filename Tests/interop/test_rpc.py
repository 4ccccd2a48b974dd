"""Calls through grpcio: unimplemented methods, Echo, error statuses, deadlines."""

import time
import urllib.parse

import grpc
import pytest
from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc

import support

ECHO = "/pixtrack.testing.v1.TestService/Echo"
SLEEP = "/pixtrack.testing.v1.TestService/Sleep"


@pytest.fixture
def ch(server):
    with support.channel(server.port) as channel:
        yield channel


@pytest.fixture
def stub(ch):
    return testing_pb2_grpc.TestServiceStub(ch)


@pytest.mark.parametrize("path", [
    "/no.such.Service/Method",
    "/pixtrack.v1.PaymentService/NoSuchMethod",
    "/pixtrack.v1.TrackingService/NoSuchMethod",
    "/pixtrack.testing.v1.TestService/NoSuchMethod",
])
def test_unimplemented(ch, path):
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary(path)(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value
    # The channel is still usable afterwards.
    assert support.health_check(ch).status == 1


def test_echo_round_trip_with_metadata(stub):
    payload = bytes(range(256)) * 4
    resp, call = stub.Echo.with_call(
        testing_pb2.EchoRequest(text="olá, PixTrack ✓", payload=payload),
        metadata=[("x-pixtrack-one", "alpha"), ("x-pixtrack-two", "beta gamma")],
        timeout=5)
    assert resp.text == "olá, PixTrack ✓"
    assert resp.payload == payload
    got = {(m.key, m.value) for m in resp.metadata}
    assert ("x-pixtrack-one", "alpha") in got, got
    assert ("x-pixtrack-two", "beta gamma") in got, got
    assert not any(m.key.startswith(":") for m in resp.metadata), f"pseudo-headers leaked: {got}"
    assert call.code() == grpc.StatusCode.OK


def test_echo_empty_message(stub):
    """A zero-length request message decodes to all defaults."""
    resp = stub.Echo(testing_pb2.EchoRequest(), timeout=5)
    assert resp.text == "" and resp.payload == b""


@pytest.mark.parametrize("code,message", [
    (grpc.StatusCode.NOT_FOUND, "pagamento não encontrado: 100%"),
    (grpc.StatusCode.INVALID_ARGUMENT, "campo inválido: «slug» — 50% off ✓"),
    (grpc.StatusCode.FAILED_PRECONDITION, "line one\nline two\ttab"),
    (grpc.StatusCode.PERMISSION_DENIED, "plain ascii %41 is not an escape"),
])
def test_error_status_and_message_round_trip(stub, code, message):
    with pytest.raises(grpc.RpcError) as e:
        stub.Echo(testing_pb2.EchoRequest(fail_code=code.value[0], fail_message=message), timeout=5)
    assert e.value.code() == code, e.value
    assert e.value.details() == message


def test_grpc_message_is_percent_encoded_on_the_wire(server):
    message = "pagamento não encontrado: 100%"
    req = testing_pb2.EchoRequest(fail_code=5, fail_message=message)
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, support.grpc_message(req.SerializeToString())))
    assert st.grpc_status == 5, st.describe()
    raw = st.grpc_message_raw
    assert raw is not None, st.describe()
    assert all(0x20 <= b <= 0x7E for b in raw), f"grpc-message not printable ASCII: {raw!r}"
    assert b"%25" in raw and b"%C3%A3" in raw.upper(), raw
    assert urllib.parse.unquote(raw.decode("ascii"), errors="strict") == message


def test_deadline_exceeded(stub, ch):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Sleep(testing_pb2.SleepRequest(millis=30000), timeout=0.3)
    elapsed = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
    assert elapsed < 10, elapsed
    # The channel still works, and a short Sleep really sleeps.
    t0 = time.monotonic()
    resp = stub.Sleep(testing_pb2.SleepRequest(millis=100), timeout=5)
    assert resp.slept_millis >= 100, resp
    assert time.monotonic() - t0 >= 0.09


def test_server_enforces_grpc_timeout(server):
    """grpcio also enforces deadlines locally; here only the server can end the call."""
    req = testing_pb2.SleepRequest(millis=30000).SerializeToString()
    with support.H2Client(server.port) as c:
        t0 = time.monotonic()
        st = c.wait(c.request(SLEEP, support.grpc_message(req), headers=[("grpc-timeout", "300m")]),
                    timeout=40)
        elapsed = time.monotonic() - t0
    support.figure(f"grpc-timeout 300m on Sleep(30000): status {st.grpc_status} after {elapsed * 1000:.0f} ms")
    assert st.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], st.describe()
    assert 0.2 <= elapsed < 10, elapsed


def test_sleep_returns_after_sleeping(stub):
    t0 = time.monotonic()
    resp = stub.Sleep(testing_pb2.SleepRequest(millis=300), timeout=5)
    elapsed = time.monotonic() - t0
    assert 0.29 <= elapsed < 10, elapsed
    assert resp.slept_millis >= 300, resp


def test_cancelled_call_leaves_channel_usable(stub):
    fut = stub.Sleep.future(testing_pb2.SleepRequest(millis=5000), timeout=10)
    time.sleep(0.2)
    assert fut.cancel()
    assert fut.cancelled()
    resp = stub.Echo(testing_pb2.EchoRequest(text="after cancel"), timeout=5)
    assert resp.text == "after cancel"


def test_undecodable_request_then_next_call_works(ch, stub):
    """0xff is not a valid protobuf tag: INTERNAL or INVALID_ARGUMENT, connection stays up."""
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary(ECHO)(b"\xff\xff\xff\xff", timeout=5)
    assert e.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), e.value
    assert stub.Echo(testing_pb2.EchoRequest(text="next"), timeout=5).text == "next"


def test_binary_metadata_is_accepted(stub):
    resp = stub.Echo(testing_pb2.EchoRequest(text="bin"),
                     metadata=[("x-blob-bin", b"\x00\xff\x10 binary"), ("x-text", "plain")], timeout=5)
    assert resp.text == "bin"
    assert ("x-text", "plain") in {(m.key, m.value) for m in resp.metadata}


def test_large_echo_round_trip(stub):
    """3 MiB each way: the response must go through HTTP/2 flow control in many windows."""
    payload = bytes(range(256)) * (3 * 1024 * 4)
    t0 = time.monotonic()
    resp = stub.Echo(testing_pb2.EchoRequest(payload=payload), timeout=20)
    support.figure(f"Echo of 3 MiB: {time.monotonic() - t0:.2f} s")
    assert resp.payload == payload


def test_concurrent_large_echoes_share_the_connection(stub):
    payloads = [bytes([i]) * (256 * 1024) for i in range(20)]
    futures = [stub.Echo.future(testing_pb2.EchoRequest(payload=p), timeout=20) for p in payloads]
    assert [f.result().payload for f in futures] == payloads


@pytest.mark.parametrize("timeout,expected", [
    ("300m", 0.3), ("300000u", 0.3), ("99999999n", 0.1), ("1S", 1.0),
])
def test_grpc_timeout_units(server, timeout, expected):
    req = testing_pb2.SleepRequest(millis=30000).SerializeToString()
    with support.H2Client(server.port) as c:
        t0 = time.monotonic()
        st = c.wait(c.request(SLEEP, support.grpc_message(req), headers=[("grpc-timeout", timeout)]),
                    timeout=40)
        elapsed = time.monotonic() - t0
    assert st.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], st.describe()
    assert expected - 0.05 <= elapsed < expected + 8.0, elapsed


def test_deadline_of_a_call_whose_body_never_comes(server):
    """The deadline timer starts when a call is still open after the read that carried its
    headers: a health check (answered on the loop) whose body is late still gets
    DEADLINE_EXCEEDED, and one whose body comes in time is answered."""
    check = "/grpc.health.v1.Health/Check"
    with support.H2Client(server.port) as c:
        t0 = time.monotonic()
        never = c.request(check, headers=[("grpc-timeout", "300m")], end_stream=False)
        st = c.wait(never, timeout=5)
        elapsed = time.monotonic() - t0
        assert st.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], st.describe()
        assert 0.29 <= elapsed < 3, elapsed
        late = c.request(check, headers=[("grpc-timeout", "5S")], end_stream=False)
        c.pump(0.3)
        c.send_body(late, support.grpc_message(b""), True)
        st = c.wait(late, timeout=5)
        assert st.grpc_status == 0 and st.http_status == 200, st.describe()


def test_unimplemented_is_a_proper_grpc_response(server):
    """Trailers-Only: HTTP 200, a gRPC content-type and grpc-status 12."""
    with support.H2Client(server.port) as c:
        st = c.wait(c.request("/no.such.Service/Method", support.grpc_message(b"")))
    assert st.http_status == 200, st.describe()
    assert st.headers.get(b"content-type", b"").startswith(b"application/grpc"), st.describe()
    assert st.grpc_status == grpc.StatusCode.UNIMPLEMENTED.value[0], st.describe()


def test_unary_call_without_a_message_is_an_error(server):
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, b""))  # HEADERS with END_STREAM, no message at all
    assert st.grpc_status not in (None, 0), st.describe()


def test_unary_call_with_two_messages_is_an_error(server):
    one = support.grpc_message(testing_pb2.EchoRequest(text="a").SerializeToString())
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, one + one))
    assert st.grpc_status not in (None, 0), st.describe()
