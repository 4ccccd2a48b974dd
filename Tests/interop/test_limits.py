"""--max-message-bytes: RESOURCE_EXHAUSTED, and the connection stays usable."""

import time

import grpc
import pytest
from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc

import support

ECHO = "/pixtrack.testing.v1.TestService/Echo"


@pytest.fixture(scope="module")
def small_server():
    server = support.start_server("--enable-test-service", "--max-message-bytes", "1024",
                                  name="pixtrackd (1 KiB limit)")
    yield server
    support.stop_and_check(server)


def test_message_over_the_limit(small_server):
    with support.channel(small_server.port) as ch:
        stub = testing_pb2_grpc.TestServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Echo(testing_pb2.EchoRequest(payload=b"x" * 2000), timeout=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        # Same channel, under the limit: fine.
        resp = stub.Echo(testing_pb2.EchoRequest(payload=b"y" * 900), timeout=5)
        assert resp.payload == b"y" * 900


def test_message_at_the_limit_is_accepted(small_server):
    req = testing_pb2.EchoRequest(payload=b"z" * 1021)  # 3 bytes of tag+length: 1024 in all
    assert req.ByteSize() == 1024
    with support.channel(small_server.port) as ch:
        resp = testing_pb2_grpc.TestServiceStub(ch).Echo(req, timeout=5)
    assert resp.payload == req.payload


def test_oversized_length_prefix_is_refused_before_the_body(small_server):
    """A prefix announcing 100 MB is refused at once; the server does not wait for the body."""
    with support.H2Client(small_server.port) as c:
        t0 = time.monotonic()
        sid = c.request(ECHO, b"\x00" + (100_000_000).to_bytes(4, "big"), end_stream=False)
        st = c.wait(sid, timeout=3)
        elapsed = time.monotonic() - t0
    assert st.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], \
        f"after {elapsed:.2f} s: {st.describe()}"
    support.assert_serving(small_server)


def test_default_limit_is_4_mib(server):
    with support.channel(server.port) as ch:
        stub = testing_pb2_grpc.TestServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Echo(testing_pb2.EchoRequest(payload=b"x" * (4 * 1024 * 1024 + 16)), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        resp = stub.Echo(testing_pb2.EchoRequest(payload=b"y" * (1024 * 1024)), timeout=10)
        assert len(resp.payload) == 1024 * 1024
