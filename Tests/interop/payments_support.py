"""Helpers for the payments tests: fake gateways process, a pixtrackd wired for payments, bots
with a gateway account, PIX generation and SQL checks."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading

import support
from tracking_support import FAKES, http_request, psql, server_env, unique_id

from pixtrack.v1 import payment_pb2 as ppb, payment_pb2_grpc, tracking_pb2 as tpb, tracking_pb2_grpc

SECRETS = {"sandbox": "sbx-secret-1", "paradise": "pdx-secret-2"}


class FakeGateways:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(FAKES / "fake_gateways.py")], stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def call(self, path: str, body: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("POST" if body is not None else "GET", path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = json.loads(r.read() or b"{}")
        conn.close()
        return data

    def ledger(self, gateway: str | None = None) -> list[dict]:
        return self.call("/_control/ledger" + (f"?gateway={gateway}" if gateway else ""))["charges"]

    def requests(self, gateway: str | None = None) -> list[dict]:
        return self.call("/_control/requests" + (f"?gateway={gateway}" if gateway else ""))["requests"]

    def fault(self, **f):
        self.call("/_control/fault", f)

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


def payment_env(db_url: str, meta, **extra: str) -> dict[str, str]:
    env = server_env(db_url, meta, PIXTRACK_WEBHOOK_SECRETS=",".join(f"{k}:{v}" for k, v in SECRETS.items()),
                     PIXTRACK_GATEWAY_TIMEOUT_MS="1500", PIXTRACK_RECONCILE_INTERVAL_MS="100",
                     PIXTRACK_RECONCILE_BACKOFF_MS="100", PIXTRACK_RECONCILE_MAX_BACKOFF_MS="300",
                     PIXTRACK_RECONCILE_MAX_CHECKS="4", PIXTRACK_WEBHOOK_POLL_MS="50", PIXTRACK_WEBHOOK_RETRY_MS="100",
                     PIXTRACK_WEBHOOK_MAX_ATTEMPTS="3")
    env.setdefault("PIXTRACK_PLUGIN_DIR", str(support.pixtrackd_path().parent))
    env.update(extra)
    return env


class Client:
    def __init__(self, port: int):
        self.ch = support.channel(port)
        self.pay = payment_pb2_grpc.PaymentServiceStub(self.ch)
        self.track = tracking_pb2_grpc.TrackingServiceStub(self.ch)

    def close(self):
        self.ch.close()

    def bot(self, gateway="sandbox", base_url="", credentials=None, pixel=None) -> tpb.Bot:
        bid = unique_id()
        req = tpb.UpsertBotRequest(id=bid, telegram_username=f"pay{bid}", enabled=True, meta_pixel_id=pixel or "")
        if pixel:
            req.conversions_api_token.value = "EAAB-payments-capi-token"
        if gateway:
            req.gateway.plugin = gateway
            req.gateway.base_url = base_url
            for k, v in (credentials or {}).items():
                req.gateway.credentials.values[k] = v
        return self.track.UpsertBot(req, timeout=10)

    def paradise_bot(self, fakes: FakeGateways, pixel=None) -> tpb.Bot:
        return self.bot("paradise", f"{fakes.base}/paradise/api/v1",
                        {"api_key": "paradise-key", "product_hash": "prod_1"}, pixel=pixel)

    def generate(self, bot_id: int, user: int, cents: int, key: str = "", timeout: float = 20, **customer) -> ppb.Payment:
        req = ppb.GeneratePixRequest(bot_id=bot_id, telegram_user_id=user, amount_cents=cents, description="VIP",
                                     idempotency_key=key)
        for k, v in customer.items():
            setattr(req.customer, k, v)
        return self.pay.GeneratePix(req, timeout=timeout)

    def get(self, pid: int) -> ppb.Payment:
        return self.pay.GetPayment(ppb.GetPaymentRequest(id=pid), timeout=10)


def webhook(port: int, gateway: str, body: dict | bytes, secret: str | None = None, headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    status, _, resp = http_request(port, "POST", f"/webhooks/{gateway}/{secret or SECRETS[gateway]}", h, data)
    return status, resp


def purchases(db_url: str, pid: int) -> list[dict]:
    out = psql(f"SELECT payload::text FROM meta_events WHERE event_name = 'Purchase' AND event_id = 'purchase_{pid}'", db_url)
    return [json.loads(line) for line in out.splitlines() if line]


def history(db_url: str, pid: int) -> list[tuple[str, str, str]]:
    out = psql(f"SELECT coalesce(from_status, ''), to_status, source FROM payment_status_history WHERE payment_id = {pid} ORDER BY id", db_url)
    return [tuple(line.split("|")) for line in out.splitlines() if line]


class PGProxy:
    """A TCP relay in front of PostgreSQL that can be cut (PostgreSQL "down" for one server only)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.open = False
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
