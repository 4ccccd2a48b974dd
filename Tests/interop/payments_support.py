"""Helpers for the payments tests: fake gateways process, a pixtrackd wired for payments, bots
with a gateway account, PIX generation and SQL checks."""

from __future__ import annotations

import json

import support
from tracking_support import FakeProcess, http_request, psql, server_env, unique_id

from pixtrack.v1 import payment_pb2 as ppb, payment_pb2_grpc, tracking_pb2 as tpb, tracking_pb2_grpc

# Webhook secrets: at least 32 characters, as pixtrackd requires.
SECRETS = {"sandbox": "sbx-secret-1-5f0a9c2e7b41d3866a9", "paradise": "pdx-secret-2-c81e3d09f2a4b7750c9", "atomopay": "atm-secret-3-0d4c6b1a9e8f2735bb9", "umbrellapag": "umb-secret-4-7a2f90c3d6e15b48e19",
           "syncpay": "syn-secret-5-e93b5d27a0c4f16d829"}

# What each fake gateway account needs (credentials and options both go in credentials.values),
# and its base path on the fake (Tests/fakes/fake_gateways.py).
GATEWAY_ACCOUNTS = {
    "atomopay": ("/atomopay/api/public/v1", {"api_token": "atomo-token", "offer_hash": "offer1", "product_hash": "prod1"}),
    "paradise": ("/paradise/api/v1", {"api_key": "paradise-key", "product_hash": "prod_1"}),
    "umbrellapag": ("/umbrellapag/api", {"api_key": "umbrella-key"}),
    "syncpay": ("/syncpay", {"client_id": "sync-id", "client_secret": "sync-secret"}),
}


class FakeGateways(FakeProcess):
    def __init__(self):
        super().__init__("fake_gateways.py", timeout=30)

    def ledger(self, gateway: str | None = None) -> list[dict]:
        return self.call("/_control/ledger" + (f"?gateway={gateway}" if gateway else ""))["charges"]

    def requests(self, gateway: str | None = None) -> list[dict]:
        return self.call("/_control/requests" + (f"?gateway={gateway}" if gateway else ""))["requests"]


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
        return self.gateway_bot(fakes, "paradise", pixel=pixel)

    def gateway_bot(self, fakes: FakeGateways, gateway: str, pixel=None) -> tpb.Bot:
        path, credentials = GATEWAY_ACCOUNTS[gateway]
        return self.bot(gateway, fakes.base + path, credentials, pixel=pixel)

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
