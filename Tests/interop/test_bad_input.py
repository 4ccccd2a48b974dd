"""Hostile or broken peers, with raw sockets and the `h2` library.

Each case must leave the server running and answering a health check on a fresh connection.
"""

import random
import socket
import time
import urllib.parse

import grpc
import h2.errors
import pytest
from pixtrack.testing.v1 import testing_pb2

import support
from support import FRAME_DATA, FRAME_GOAWAY, FRAME_HEADERS, FRAME_PING, FRAME_SETTINGS
from support import FRAME_WINDOW_UPDATE, PREFACE, frame

ECHO = "/pixtrack.testing.v1.TestService/Echo"
SLEEP = "/pixtrack.testing.v1.TestService/Sleep"
INTERNAL = grpc.StatusCode.INTERNAL.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]


@pytest.fixture(autouse=True)
def still_serving_afterwards(server):
    yield
    support.assert_serving(server)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    with socket.create_connection((support.HOST, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        return support.read_until_closed(s, timeout)


# --- the connection level ------------------------------------------------------------------------

def test_garbage_instead_of_preface(server):
    rnd = random.Random(1234)
    garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(rnd.randrange(256) for _ in range(500))
    data, closed = raw_exchange(server.port, garbage)
    assert closed, f"connection left open after garbage; got {data[:100]!r}"


def test_http1_request_gets_an_answer_or_close(server):
    with socket.create_connection((support.HOST, server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data, closed = support.read_until_closed(s, 5)
    assert data or closed, "no answer and no close within 5 s"


MALFORMED = {
    "data-on-stream-0": frame(FRAME_DATA, 0, 0, b"abc"),
    "settings-length-5": frame(FRAME_SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
    "length-over-max-frame-size": frame(0xFA, 0, 0, b"\x00" * 16, length=0xFFFFFF),
    "window-update-zero": frame(FRAME_WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"),
    "ping-length-4": frame(FRAME_PING, 0, 0, b"\x00" * 4),
    "headers-garbage-hpack": frame(FRAME_HEADERS, 0x4 | 0x1, 1, b"\xff\xff\xff\xff\xff\xff\x7f"),
    "headers-on-stream-2": frame(FRAME_HEADERS, 0x4 | 0x1, 2, b"\x83\x86\x84"),
}


@pytest.mark.parametrize("bad", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_frame_after_preface_gets_goaway(server, bad):
    data, closed = raw_exchange(server.port, PREFACE + frame(FRAME_SETTINGS, 0, 0, b"") + bad)
    frames = support.parse_frames(data)
    goaways = [f for f in frames if f.type == FRAME_GOAWAY]
    assert goaways, f"no GOAWAY; frames={[(f.type, f.flags, f.stream) for f in frames]} closed={closed}"
    code = int.from_bytes(goaways[-1].payload[4:8], "big")
    assert code != 0, f"GOAWAY with NO_ERROR for a protocol violation: {goaways[-1]}"
    assert closed, "connection not closed after GOAWAY"


# --- the stream level ------------------------------------------------------------------------------

def echo_body(**fields) -> bytes:
    return support.grpc_message(testing_pb2.EchoRequest(**fields).SerializeToString())


def assert_refused(c: support.H2Client, st: support.StreamResult) -> None:
    """The request failed somehow (reset, GOAWAY, HTTP error or gRPC error), not OK."""
    refused = (st.reset_code is not None or c.goaway is not None or c.closed
               or (st.http_status is not None and st.http_status != 200)
               or (st.grpc_status is not None and st.grpc_status != 0))
    assert refused, f"accepted: {st.describe()}"
    assert st.done or c.goaway is not None or c.closed, f"no answer within the timeout: {st.describe()}"


def test_oversized_header_value(server):
    with support.H2Client(server.port) as c:
        c.settle(0.2)
        st = c.wait(c.request(ECHO, echo_body(text="big"), headers=[("x-big", "a" * 100 * 1024)]))
        assert_refused(c, st)


def test_length_prefix_longer_than_body(server):
    body = support.grpc_message(b"\x0a\x08abcdefgh", declared_length=1000)  # 10 bytes, says 1000
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, body))
    assert st.grpc_status == INTERNAL, st.describe()


def test_truncated_length_prefix(server):
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, b"\x00\x00\x00"))
    assert st.grpc_status == INTERNAL, st.describe()


def test_unknown_grpc_encoding_is_unimplemented(server):
    body = support.grpc_message(b"\x0a\x02hi", compressed=True)
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, body, headers=[("grpc-encoding", "snappy")]))
    assert st.grpc_status == UNIMPLEMENTED, st.describe()


def test_compressed_flag_without_encoding_is_an_error(server):
    body = support.grpc_message(b"\x0a\x02hi", compressed=True)
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, body))
    assert st.grpc_status not in (None, 0), st.describe()


def test_non_ascii_metadata_value(server):
    with support.H2Client(server.port, validate=False) as c:
        st = c.wait(c.request(ECHO, echo_body(text="meta"), headers=[(b"x-weird", b"\xff\xfe")]))
        assert_refused(c, st)


def test_invalid_utf8_in_a_string_field(server):
    """text (field 1, a proto3 string) holding 0xff 0xfe: an error status, or a reply that a
    strict protobuf parser accepts; never invalid UTF-8 echoed back."""
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, support.grpc_message(b"\x0a\x02\xff\xfe")))
    assert st.done, st.describe()
    if st.grpc_status == 0:
        n = int.from_bytes(st.data[1:5], "big")
        testing_pb2.EchoResponse.FromString(st.data[5:5 + n])  # raises on invalid UTF-8
    else:
        assert st.grpc_status is not None, st.describe()


@pytest.mark.parametrize("content_type", ["text/plain", "image/png"])
def test_non_grpc_content_type_is_415(server, content_type):
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, echo_body(text="x"), content_type=content_type))
    assert st.http_status == 415, st.describe()


def test_missing_content_type_is_415(server):
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, echo_body(text="x"), content_type=None))
    assert st.http_status == 415, st.describe()


def test_get_method_is_refused(server):
    with support.H2Client(server.port) as c:
        st = c.wait(c.request(ECHO, method="GET"))
        assert_refused(c, st)


# --- misbehaving clients ---------------------------------------------------------------------------

def test_client_vanishes_mid_call(server):
    """The answer to a Sleep finds its connection gone: nothing breaks."""
    for _ in range(5):
        c = support.H2Client(server.port)
        c.request(SLEEP, support.grpc_message(testing_pb2.SleepRequest(millis=300).SerializeToString()))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST, not FIN
    time.sleep(0.6)


def test_rapid_reset(server):
    """500 requests each cancelled at once (CVE-2023-44487 pattern): GOAWAY or survive."""
    c = support.H2Client(server.port)
    body = support.grpc_message(testing_pb2.SleepRequest(millis=1000).SerializeToString())
    sent = 0
    try:
        for _ in range(500):
            if c.goaway or c.closed:
                break
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", SLEEP),
                                      (":authority", "x"), ("content-type", "application/grpc"),
                                      ("te", "trailers")])
            c.conn.send_data(sid, body, end_stream=True)
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            c.flush()
            sent += 1
            if sent % 50 == 0:
                c.pump(0.01)
        c.settle(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        c.close()
    support.figure(f"rapid reset: {sent} streams opened and cancelled; "
                   f"GOAWAY={getattr(c.goaway, 'error_code', None)}")


def test_silent_connections_do_not_block_others(server):
    """Connections that never send a byte (or stop mid-preface) do not stall the server."""
    socks = []
    try:
        for i in range(20):
            s = socket.create_connection((support.HOST, server.port), timeout=5)
            if i % 3 == 1:
                s.sendall(PREFACE[:10])
            elif i % 3 == 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            socks.append(s)
        t0 = time.monotonic()
        support.assert_serving(server)
        assert time.monotonic() - t0 < 2.0
    finally:
        for s in socks:
            s.close()


def test_tiny_client_window_is_respected(server):
    """The client allows 100 bytes per stream window: a 20 KiB answer must trickle through
    WINDOW_UPDATEs; sending more than the window is a flow-control error in h2."""
    payload = bytes(range(256)) * 80
    with support.H2Client(server.port, initial_window=100) as c:
        c.settle(0.2)
        st = c.wait(c.request(ECHO, echo_body(payload=payload)), timeout=10)
        error = c.protocol_error
    assert error is None, f"server broke flow control: {error!r}"
    assert st.grpc_status == 0, st.describe()
    n = int.from_bytes(st.data[1:5], "big")
    assert testing_pb2.EchoResponse.FromString(st.data[5:5 + n]).payload == payload


def test_ping_is_answered(server):
    with support.H2Client(server.port) as c:
        c.conn.ping(b"pixtrack")
        c.flush()
        deadline = time.monotonic() + 3
        acked = False
        while time.monotonic() < deadline and not acked and not c.closed:
            c.sock.settimeout(0.2)
            try:
                data = c.sock.recv(65536)
            except socket.timeout:
                continue
            acked = any(f.type == FRAME_PING and f.flags & 0x1 and f.payload == b"pixtrack"
                        for f in support.parse_frames(data))
    assert acked, "no PING ACK"


@pytest.mark.parametrize("split", [False, True], ids=["one-data-frame", "two-data-frames"])
def test_two_messages_on_a_unary_call_are_internal(server, split):
    """A unary method gets exactly one request message: a second, in the same DATA frame or in
    the next, ends the call with INTERNAL; the connection goes on serving."""
    first, second = echo_body(text="one"), echo_body(text="two")
    with support.H2Client(server.port) as c:
        if split:
            sid = c.request(ECHO, end_stream=False)
            c.conn.send_data(sid, first)
            c.flush()
            c.conn.send_data(sid, second, end_stream=True)
            c.flush()
        else:
            sid = c.request(ECHO, first + second)
        st = c.wait(sid)
        message = urllib.parse.unquote((st.grpc_message_raw or b"").decode())
        assert st.grpc_status == INTERNAL and "more than one request message" in message, st.describe()
        ok = c.wait(c.request(ECHO, echo_body(text="after")))
        assert ok.grpc_status == 0, ok.describe()


def test_message_split_across_tiny_data_frames(server):
    """The 5-byte prefix and the message arrive in 3-byte DATA frames."""
    body = echo_body(text="fragmented", payload=bytes(range(100)))
    with support.H2Client(server.port) as c:
        sid = c.request(ECHO, end_stream=False)
        for i in range(0, len(body), 3):
            chunk = body[i:i + 3]
            c.conn.send_data(sid, chunk, end_stream=i + 3 >= len(body))
            c.flush()
        st = c.wait(sid)
    assert st.grpc_status == 0, st.describe()
    n = int.from_bytes(st.data[1:5], "big")
    resp = testing_pb2.EchoResponse.FromString(st.data[5:5 + n])
    assert resp.text == "fragmented" and resp.payload == bytes(range(100))


def test_padded_data_frames(server):
    body = echo_body(text="padded")
    with support.H2Client(server.port) as c:
        sid = c.request(ECHO, end_stream=False)
        c.conn.send_data(sid, body[:4], pad_length=50)
        c.conn.send_data(sid, body[4:], end_stream=True, pad_length=7)
        c.flush()
        st = c.wait(sid)
    assert st.grpc_status == 0, st.describe()
    n = int.from_bytes(st.data[1:5], "big")
    assert testing_pb2.EchoResponse.FromString(st.data[5:5 + n]).text == "padded"
