"""Helpers for the tracking tests: a private PostgreSQL schema per module, the fake Meta, a
pixtrackd wired to both, plain HTTP/1.1 requests (no redirect following), Redis and SQL access."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import support

FAKES = support.REPO / "Tests" / "fakes"


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run through `make test` or `scripts/services temp ...`")
    return value


def psql(sql: str, url: str | None = None) -> str:
    """Runs SQL with psql (PIXTRACK_TEST_PG_BIN or PATH); returns unaligned output."""
    pg_bin = os.environ.get("PIXTRACK_TEST_PG_BIN", "")
    exe = str(Path(pg_bin) / "psql") if pg_bin else "psql"
    res = subprocess.run([exe, url or require_env("DATABASE_URL"), "-v", "ON_ERROR_STOP=1", "-qtAX", "-c", sql],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"psql failed: {res.stderr}"
    return res.stdout.strip()


def new_schema() -> str:
    """A fresh schema; returns DATABASE_URL with search_path set to it (isolates the outbox)."""
    name = "t_" + uuid.uuid4().hex[:12]
    psql(f"CREATE SCHEMA {name}")
    base = require_env("DATABASE_URL")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{name}"


def redis_cli(*args: str, url: str | None = None) -> str:
    u = urllib.parse.urlsplit(url or require_env("REDIS_URL"))
    res = subprocess.run(["redis-cli", "-h", u.hostname, "-p", str(u.port), "-n", (u.path or "/0")[1:] or "0", *args],
                         capture_output=True, text=True, timeout=10)
    return res.stdout.strip()


class FakeProcess:
    """A fake from Tests/fakes in its own process: it prints its port, then answers `/_control/...`."""

    def __init__(self, script: str, timeout: float):
        self.timeout = timeout
        self.proc = subprocess.Popen([sys.executable, str(FAKES / script)], stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def call(self, path: str, body: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        conn.request("POST" if body is not None else "GET", path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = json.loads(r.read() or b"{}")
        conn.close()
        return data

    def fault(self, **f):
        self.call("/_control/fault", f)

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


class FakeMeta(FakeProcess):
    def __init__(self):
        super().__init__("fake_meta.py", timeout=10)

    def events(self, event_id: str | None = None) -> list[dict]:
        evs = self.call("/_control/events")["events"]
        return [e for e in evs if event_id is None or e["event_id"] == event_id]

    def requests(self, pixel: str | None = None) -> list[dict]:
        return [r for r in self.call("/_control/requests")["requests"] if pixel is None or r["pixel_id"] == pixel]


def server_env(database_url: str, meta: FakeMeta, **extra: str) -> dict[str, str]:
    env = {"DATABASE_URL": database_url, "PIXTRACK_META_BASE_URL": meta.base, "PIXTRACK_META_POLL_MS": "50",
           "PIXTRACK_META_BACKOFF_MS": "50", "PIXTRACK_META_MAX_BACKOFF_MS": "200", "PIXTRACK_SLUG_CACHE_MS": "0",
           "PIXTRACK_HEALTH_INTERVAL_MS": "200"}
    env.update(extra)
    return env


def http_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, lowercased headers as a list of pairs, body). Never follows redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True, skip_host=any(k.lower() == "host" for k in (headers or {})))
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    hdrs = [(k.lower(), v) for k, v in r.getheaders()]
    conn.close()
    return r.status, hdrs, data


def header(hdrs, name):
    return next((v for k, v in hdrs if k == name), None)


def metric(port: int, line_prefix: str) -> float:
    _, _, body = http_request(port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(line_prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def unique_id() -> int:
    return int(uuid.uuid4().int % 9_000_000_000) + 1_000_000_000


def pixel_id() -> str:
    return str(uuid.uuid4().int % 10**15 + 10**14)


class TCPProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones.

    A connection being accepted while `cut()` runs must not escape it (it would keep the server's
    pool connected to a "cut" database): the open check and the bookkeeping share one lock, and
    the check is made again after the upstream connect."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.open = True
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _drop(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                refused = not self.open
            if refused:
                self._drop(c)
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                up.settimeout(None)
            except OSError:
                self._drop(c)
                continue
            with self.lock:
                kept = self.open
                if kept:
                    self.conns += [c, up]
            if not kept:
                self._drop(c, up)
                continue
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        TCPProxy._drop(a, b)

    def cut(self):
        with self.lock:
            self.open = False
            conns, self.conns = self.conns, []
        self._drop(*conns)

    def restore(self):
        with self.lock:
            self.open = True

    def close(self):
        self.cut()
        self.sock.close()
