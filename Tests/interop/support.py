"""Helpers for the pixtrackd interop suite: the server process, channels, raw HTTP/2.

Everything here talks to 127.0.0.1 only, with bounded loops and timeouts on every wait.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Every server started by a test, for the failure report (conftest attaches their logs).
STARTED: list["Server"] = []
# Figures printed in the terminal summary (latencies, timings).
FIGURES: list[str] = []


def figure(line: str) -> None:
    """Record a measured figure for the end-of-run summary (and print it for `-s` runs)."""
    FIGURES.append(line)
    print(line)


def pixtrackd_path() -> Path:
    p = Path(os.environ.get("PIXTRACKD", ".build/debug/pixtrackd"))
    return p if p.is_absolute() else REPO / p


_PASSED_THROUGH = {"PIXTRACK_PLUGIN_DIR", "PIXTRACK_TEST_PG_BIN", "PIXTRACK_SECRETS_KEY_FILE"}
_LISTENING = re.compile(r"event=listening\b.*?\bport=(\d+)")


class Server:
    """One pixtrackd process. stdout and stderr are merged and read by a background thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, name: str = "pixtrackd"):
        self.args = ["--port", "0", *args] if "--port" not in args else list(args)
        self.extra_env = env or {}
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.port: int | None = None
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self._listening = threading.Event()
        self._eof = threading.Event()
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def spawn(self) -> "Server":
        binary = pixtrackd_path()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"{binary} does not exist or is not executable: build it first "
                "(`swift build`, or run the suite with `make test`), or set PIXTRACKD")
        # Only what the test asks for: no PIXTRACK_RPC_TOKEN, PIXTRACK_PORT, ... from outside.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PIXTRACK_") or k in _PASSED_THROUGH}
        env.update(self.extra_env)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(binary), *self.args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        STARTED.append(self)
        threading.Thread(target=self._read, name=f"{self.name}-log", daemon=True).start()
        return self

    def start(self, timeout: float = 20.0) -> "Server":
        """Spawn and wait for the `event=listening ... port=N` line."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return self
            if self.proc.poll() is not None and self._eof.is_set():
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before listening:\n"
                    + self.log())
        self.kill()
        raise RuntimeError(f"{self.name} printed no event=listening line in {timeout} s:\n"
                           + self.log())

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
            if self.port is None:
                m = _LISTENING.search(line)
                if m:
                    self.port = int(m.group(1))
                    self._listening.set()
        self._eof.set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; returns the exit code (negative = killed by that signal)."""
        assert self.proc
        rc = self.proc.wait(timeout=timeout)
        self._eof.wait(2)
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        return rc

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL (and raise) when it does not exit in time."""
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of SIGTERM:\n" + self.log())

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def log(self, last: int | None = None) -> str:
        with self._lock:
            lines = list(self.lines)
        if last is not None and len(lines) > last:
            lines = [f"... ({len(lines) - last} earlier lines)"] + lines[-last:]
        return "\n".join(lines)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def exit_description(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(*args: str, env: dict[str, str] | None = None, name: str = "pixtrackd") -> Server:
    return Server(*args, env=env, name=name).start()


def public_port(server: Server, timeout: float = 5.0) -> int:
    """The port of the server's --public-port listener (from its `event=listening_public` line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"event=listening_public .*?port=(\d+)", server.log())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError(f"{server.name} printed no event=listening_public line")


def stop_and_check(server: Server) -> None:
    """SIGTERM; the server must exit 0 (within its grace period + margin)."""
    rc = server.terminate(timeout=15)
    assert rc == 0, (f"{server.name} ended with {exit_description(rc)} after SIGTERM; log:\n"
                     + server.log(last=200))


# --- grpcio --------------------------------------------------------------------------------------

def channel(port: int, *options: tuple[str, object]) -> grpc.Channel:
    ch = grpc.insecure_channel(f"{HOST}:{port}", options=list(options))
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch


def health_check(ch: grpc.Channel, service: str = "", timeout: float = 5.0, metadata=None):
    stub = health_pb2_grpc.HealthStub(ch)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                      metadata=metadata)


def assert_serving(server: Server) -> None:
    """The process is alive and answers a health check on a brand-new connection."""
    assert server.alive(), f"pixtrackd died ({exit_description(server.proc.returncode)})"
    ch = grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        resp = health_check(ch, timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        ch.close()


# --- raw HTTP/2 ----------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_DATA, FRAME_HEADERS, FRAME_RST_STREAM, FRAME_SETTINGS = 0x0, 0x1, 0x3, 0x4
FRAME_PING, FRAME_GOAWAY, FRAME_WINDOW_UPDATE = 0x6, 0x7, 0x8
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3


def frame(ftype: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    """One HTTP/2 frame; `length` overrides the header's length field (for malformed frames)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


@dataclass
class RawFrame:
    type: int
    flags: int
    stream: int
    payload: bytes


def parse_frames(data: bytes) -> list[RawFrame]:
    frames, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + n > len(data):
            break
        frames.append(RawFrame(data[i + 3], data[i + 4],
                               int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF,
                               data[i + 9:i + 9 + n]))
        i += 9 + n
    return frames


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until EOF/reset or `timeout`; returns (bytes, closed_by_peer)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return buf, False
        except (ConnectionResetError, BrokenPipeError):
            return buf, True
        if not chunk:
            return buf, True
        buf += chunk


def grpc_message(body: bytes, compressed: bool = False, declared_length: int | None = None) -> bytes:
    """A length-prefixed gRPC message; `declared_length` lies about the length."""
    n = len(body) if declared_length is None else declared_length
    return bytes([1 if compressed else 0]) + struct.pack(">I", n) + body


@dataclass
class StreamResult:
    stream_id: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    ended: bool = False
    reset_code: int | None = None

    @property
    def http_status(self) -> int | None:
        s = self.headers.get(b":status")
        return int(s) if s is not None else None

    @property
    def grpc_status(self) -> int | None:
        # Trailers, or Trailers-Only (grpc-status in the only HEADERS frame).
        s = self.trailers.get(b"grpc-status", self.headers.get(b"grpc-status"))
        return int(s) if s is not None else None

    @property
    def grpc_message_raw(self) -> bytes | None:
        return self.trailers.get(b"grpc-message", self.headers.get(b"grpc-message"))

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def describe(self) -> str:
        return (f"stream {self.stream_id}: headers={self.headers} trailers={self.trailers} "
                f"data={self.data[:64]!r}{'...' if len(self.data) > 64 else ''} "
                f"ended={self.ended} reset={self.reset_code}")


class H2Client:
    """A minimal HTTP/2 client on the `h2` library for requests grpcio would never send."""

    def __init__(self, port: int, timeout: float = 5.0, validate: bool = True,
                 initial_window: int | None = None):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=validate, normalize_outbound_headers=validate,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if initial_window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self.protocol_error: Exception | None = None
        self._rx = b""
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, body: bytes = b"", headers=(),
                content_type: str | None = "application/grpc", end_stream: bool = True,
                method: str = "POST") -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", f"{HOST}:{self.port}")]
        if content_type is not None:
            hdrs.append(("content-type", content_type))
        hdrs += [("te", "trailers"), *headers]
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not body)
        self.streams[sid] = StreamResult(sid)
        self.flush()
        if body:
            self.send_body(sid, body, end_stream)
        return sid

    def send_body(self, sid: int, body: bytes, end_stream: bool, timeout: float = 10.0) -> None:
        """DATA frames within the peer's frame size and flow-control windows."""
        deadline = time.monotonic() + timeout
        while body:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                if time.monotonic() > deadline or not self.pump(0.1):
                    raise TimeoutError(f"no flow-control window to send on stream {sid}")
                continue
            chunk, body = body[:room], body[room:]
            self.conn.send_data(sid, chunk, end_stream=end_stream and not body)
            self.flush()

    def pump(self, timeout: float) -> bool:
        """Read once (up to `timeout`) and handle events; False when nothing more can come."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        # Feed h2 one frame at a time: it raises on a frame that follows GOAWAY (e.g. a PING),
        # and the events of a batch that raised would be lost.
        self._rx += data
        while len(self._rx) >= 9:
            n = 9 + int.from_bytes(self._rx[:3], "big")
            if len(self._rx) < n:
                break
            chunk, self._rx = self._rx[:n], self._rx[n:]
            try:
                events = self.conn.receive_data(chunk)
            except h2.exceptions.ProtocolError as e:
                self.protocol_error = e
                self.closed = True
                return False
            for ev in events:
                self._handle(ev)
        try:
            self.flush()
        except OSError:
            self.closed = True
        return True

    def _handle(self, ev) -> None:
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived) and st:
            st.headers.update({bytes(k): bytes(v) for k, v in ev.headers})
        elif isinstance(ev, h2.events.TrailersReceived) and st:
            st.trailers.update({bytes(k): bytes(v) for k, v in ev.headers})
        elif isinstance(ev, h2.events.DataReceived):
            if st:
                st.data += ev.data
            if ev.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        elif isinstance(ev, h2.events.StreamEnded) and st:
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset_code = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, change in ev.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value

    def wait(self, sid: int, timeout: float = 5.0) -> StreamResult:
        """Pump until stream `sid` ends or is reset, the connection ends, or `timeout`."""
        st = self.streams[sid]
        deadline = time.monotonic() + timeout
        while not st.done and not self.goaway and time.monotonic() < deadline:
            if not self.pump(min(0.2, max(0.01, deadline - time.monotonic()))):
                break
        return st

    def settle(self, timeout: float = 0.5) -> None:
        """Pump for a while (e.g. to receive the server's SETTINGS)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pump(0.05):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "H2Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
