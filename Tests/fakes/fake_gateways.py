#!/usr/bin/env python3
"""Fake ÁtomoPay, Paradise, UmbrellaPag and SyncPay APIs on loopback, for tests and demos.

One process serves all four gateways under path prefixes, speaking their wire formats as
written in docs/DESIGN.md §4 (observed formats, see Plugins/README.md):

    http://127.0.0.1:PORT/atomopay/api/public/v1     ?api_token=  (default token "atomo-token")
    http://127.0.0.1:PORT/paradise/api/v1            X-API-Key    (default "paradise-key")
    http://127.0.0.1:PORT/umbrellapag/api            x-api-key    (default "umbrella-key")
    http://127.0.0.1:PORT/syncpay                    client_id/client_secret ("sync-id"/"sync-secret")

It keeps a ledger of every charge it created (the ground truth for "no orphan PIX"), delivers
webhooks on command and injects faults on command. Control endpoints (JSON in, JSON out):

    GET  /_control/ledger[?gateway=G]     {"charges": [...]} every charge created, in order
    GET  /_control/requests[?gateway=G]   {"requests": [...]} every gateway request received
    POST /_control/reset                  forget charges, requests, faults, tokens
    POST /_control/fault                  queue a fault (see FAULTS below)
    POST /_control/status                 {"gateway", "id", "status", "reference_override"?}: set a
                                          charge's status word; with reference_override, its status
                                          answers name that reference instead of the charge's own
    POST /_control/webhook                {"gateway", "id", "status"?, "url"?, "shape"?}: POST the
                                          gateway's webhook for that charge to its postback URL (or
                                          `url`), in one of the shapes that gateway is seen to send
    GET  /_control/shapes                 {gateway: [shape, ...]} the webhook shapes (first: default)
    POST /_control/config                 {"token_ttl_seconds": N, "credentials": {gateway: {...}}}
    POST /_control/expire_tokens          every SyncPay token issued so far is expired

FAULTS: {"gateway": "atomopay"|"*", "op": "create"|"status"|"auth"|"*", "kind": K, "times": 1,
"latency_ms": 0, "status": 503, "create_charge": bool}. Kinds: latency (then answer normally),
http5xx, reset (read the request, create the charge, reset the connection), timeout (create the
charge, never answer), malformed (truncated JSON), html (an HTML error page with status 200),
badpix (a pix code whose CRC is wrong), missing_fields ({}), wrong_types, decline (422),
echo_request (an HTML error page quoting the request URL and body, as some gateways' pages do),
expired_token (401 as if the Bearer token had expired; SyncPay). `create_charge` defaults to true
for reset/timeout/malformed/html/badpix/missing_fields/wrong_types and false otherwise.

Usage: fake_gateways.py [--port 0]   prints the port on the first line of stdout, then serves.
"""
import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATEWAYS = ("atomopay", "paradise", "umbrellapag", "syncpay")
# Each gateway's base path below its prefix (the production base URLs' paths).
BASE_PATHS = {"atomopay": "/api/public/v1", "paradise": "/api/v1", "umbrellapag": "/api", "syncpay": ""}
DEFAULT_CREDENTIALS = {
    "atomopay": {"api_token": "atomo-token"},
    "paradise": {"api_key": "paradise-key"},
    "umbrellapag": {"api_key": "umbrella-key"},
    "syncpay": {"client_id": "sync-id", "client_secret": "sync-secret"},
}
INITIAL_STATUS = {"atomopay": "waiting_payment", "paradise": "pending", "umbrellapag": "WAITING_PAYMENT", "syncpay": "pending"}
CHARGE_BY_DEFAULT = {"reset", "timeout", "malformed", "html", "badpix", "missing_fields", "wrong_types"}


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def br_code(amount_cents: int, txid: str, name="FAKE GATEWAY", city="SAO PAULO") -> str:
    def tlv(i, v):
        return "%s%02d%s" % (i, len(v), v)
    account = tlv("00", "br.gov.bcb.pix") + tlv("25", "pix.fake.invalid/qr/v2/" + txid[:40])
    s = tlv("00", "01") + tlv("01", "12") + tlv("26", account) + tlv("52", "0000") + tlv("53", "986")
    s += tlv("54", "%d.%02d" % (amount_cents // 100, amount_cents % 100)) + tlv("58", "BR")
    s += tlv("59", name[:25]) + tlv("60", city[:15]) + tlv("62", tlv("05", "".join(c for c in txid if c.isalnum())[:25] or "***"))
    s += "6304"
    return s + "%04X" % crc16(s.encode())


def reais_to_cents(v):
    """Exact: '19.9' / 19.9 (parsed as text) -> 1990; None when not a plain decimal."""
    text = v if isinstance(v, str) else json.dumps(v)
    try:
        whole, _, frac = text.partition(".")
        if not whole.lstrip("-").isdigit() or (frac and not frac.isdigit()) or len(frac.rstrip("0")) > 2:
            return None
        frac = (frac + "00")[:2]
        sign = -1 if whole.startswith("-") else 1
        return sign * (abs(int(whole)) * 100 + int(frac))
    except ValueError:
        return None


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.charges = []          # ledger, in creation order
        self.by_id = {}            # (gateway, id) -> charge
        self.requests = []
        self.faults = []
        self.tokens = {}           # token -> expiry (epoch seconds)
        self.token_ttl = 3600
        self.credentials = json.loads(json.dumps(DEFAULT_CREDENTIALS))
        self.counter = 1000

    def take_fault(self, gateway, op):
        with self.lock:
            for f in self.faults:
                if f.get("gateway", "*") in ("*", gateway) and f.get("op", "*") in ("*", op):
                    f["times"] = f.get("times", 1) - 1
                    if f["times"] <= 0:
                        self.faults.remove(f)
                    return dict(f)
        return None


STATE = State()


class ResetConnection(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGateway/1"

    def log_message(self, *args):  # quiet
        pass

    # ---- plumbing -------------------------------------------------------------------------
    def body_bytes(self):
        if not hasattr(self, "_body"):
            n = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(n) if n > 0 else b""
        return self._body

    def json_body(self):
        try:
            return json.loads(self.body_bytes() or b"null")
        except ValueError:
            return None

    def send(self, status, payload, content_type="application/json", headers=()):
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def reset_connection(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        finally:
            raise ResetConnection()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ResetConnection, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = [p for p in url.path.split("/") if p]
        if parts and parts[0] == "_control":
            return self.control(method, parts[1:] if len(parts) > 1 else [""], query)
        if not parts or parts[0] not in GATEWAYS:
            return self.send(404, {"message": "no such gateway"})
        gateway, rest = parts[0], "/" + "/".join(parts[1:])
        base = BASE_PATHS[gateway]
        if base and not (rest == base or rest.startswith(base + "/")):
            return self.send(404, {"message": "not found"})
        rest = rest[len(base):]
        body = self.body_bytes() if method == "POST" else b""
        with STATE.lock:
            STATE.requests.append({"gateway": gateway, "method": method, "path": url.path, "query": query,
                                   "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "body": body.decode("utf-8", "replace"), "at": time.time()})
        getattr(self, "gw_" + gateway)(method, rest, query)

    # ---- faults ---------------------------------------------------------------------------
    def apply_fault(self, gateway, op, create):
        """Runs a queued fault for (gateway, op). Returns True when it already answered."""
        f = STATE.take_fault(gateway, op)
        if not f:
            return False
        kind = f.get("kind")
        if f.get("latency_ms"):
            time.sleep(f["latency_ms"] / 1000.0)
        if kind == "latency":
            return False
        make = f.get("create_charge", kind in CHARGE_BY_DEFAULT)
        charge = create() if (make and create) else None
        if kind == "http5xx":
            self.send(f.get("status", 503), {"message": "internal error"})
        elif kind == "reset":
            self.reset_connection()
        elif kind == "timeout":
            time.sleep(f.get("hang_ms", 15000) / 1000.0)
            self.reset_connection()
        elif kind == "malformed":
            self.send(200, b'{"status": "success", "data": {"id": "x", "pix": {"qrCode": "0002', "application/json")
        elif kind == "html":
            self.send(f.get("status", 200), "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif kind == "echo_request":
            # An error page that quotes the request: its URL (with any token) and its body.
            page = "<html><body><h1>Error</h1><p>GET %s</p><pre>%s</pre></body></html>" % (
                self.path, self.body_bytes().decode("utf-8", "replace"))
            self.send(f.get("status", 200), page, "text/html")
        elif kind == "missing_fields":
            self.send(200, {})
        elif kind == "wrong_types":
            self.send(200, {"hash": ["x"], "id": {"a": 1}, "transaction_id": None, "identifier": 12.5, "qr_code": 7,
                            "pix_code": False, "pix": "nope", "data": {"id": [], "status": 3, "pix": {"qrCode": 1}}})
        elif kind == "badpix":
            if charge is None:
                charge = create()
            charge["bad_pix"] = True
            self.answer_create(gateway, charge)
        elif kind == "decline":
            self.send(422, {"status": "error", "message": "Dados do cliente inválidos"})
        elif kind == "expired_token":
            self.send(401, {"message": "Unauthenticated."})
        else:
            self.send(500, {"message": "unknown fault kind %s" % kind})
        return True

    # ---- ledger ---------------------------------------------------------------------------
    def new_charge(self, gateway, amount_cents, reference, postback, extra=None):
        with STATE.lock:
            STATE.counter += 1
            n = STATE.counter
            charge = {"gateway": gateway, "amount_cents": amount_cents, "reference": reference,
                      "postback_url": postback, "status": INITIAL_STATUS[gateway], "created_at": time.time(),
                      "seq": len(STATE.charges) + 1}
            if gateway == "atomopay":
                charge["id"], charge["hash"] = str(n), "atm" + uuid.uuid4().hex[:12]
            elif gateway == "paradise":
                charge["id"] = "pdx%d" % n
            else:
                charge["id"] = str(uuid.uuid4())
            charge["pix_code"] = br_code(amount_cents, charge["id"])
            charge.update(extra or {})
            STATE.charges.append(charge)
            STATE.by_id[(gateway, charge["id"])] = charge
            if "hash" in charge:
                STATE.by_id[(gateway, charge["hash"])] = charge
        return charge

    def find(self, gateway, ident):
        with STATE.lock:
            return STATE.by_id.get((gateway, ident))

    def pix_of(self, charge):
        code = charge["pix_code"]
        return code[:-4] + ("0000" if not code.endswith("0000") else "FFFF") if charge.get("bad_pix") else code

    def answer_create(self, gateway, c):
        if gateway == "atomopay":
            self.send(200, {"id": int(c["id"]), "hash": c["hash"], "amount": c["amount_cents"], "payment_method": "pix",
                            "payment_status": c["status"],
                            "pix": {"pix_qr_code": self.pix_of(c), "expiration_date": "2030-01-01 12:00:00"}})
        elif gateway == "paradise":
            self.send(200, {"status": "success", "transaction_id": c["id"], "id": c["reference"],
                            "qr_code": self.pix_of(c), "qr_code_base64": "iVBORw0KGgo=", "amount": c["amount_cents"],
                            "expires_at": "2030-01-01 12:00:00"})
        elif gateway == "umbrellapag":
            self.send(200, {"status": 200, "message": "Transação criada com sucesso",
                            "data": {"id": c["id"], "status": c["status"], "amount": c["amount_cents"],
                                     "paymentMethod": "PIX", "metadata": json.dumps({"reference": c["reference"]}),
                                     "pix": {"qrCode": self.pix_of(c), "expirationDate": "2030-01-01T15:00:00.000Z"}}})
        else:
            self.send(200, {"message": "Cashin request successfully", "pix_code": self.pix_of(c), "identifier": c["id"]})

    def answer_status(self, gateway, c):
        if c is None:
            return self.send(404, {"message": "Transaction not found"})
        ref = c.get("reference_override") or c["reference"]
        if gateway == "atomopay":
            self.send(200, {"id": int(c["id"]), "hash": c["hash"], "amount": c["amount_cents"], "payment_status": c["status"],
                            "reference": ref})
        elif gateway == "paradise":
            self.send(200, {"transaction_id": c["id"], "id": ref, "status": c["status"], "amount": c["amount_cents"]})
        elif gateway == "umbrellapag":
            data = {"id": c["id"], "status": c["status"], "amount": c["amount_cents"], "metadata": json.dumps({"reference": ref})}
            if c.get("refunds"):
                data["refunds"] = c["refunds"]
            self.send(200, {"status": 200, "data": data})
        else:
            self.send(200, {"data": {"reference_id": c["id"], "status": c["status"], "amount": reais(c["amount_cents"]),
                                     "external_reference": ref, "transaction_date": "2025-01-01T12:00:00Z"}})

    # ---- gateways -------------------------------------------------------------------------
    def check_cred(self, gateway, ok):
        if not ok:
            self.send(401, {"message": "Unauthenticated."})
        return ok

    def gw_atomopay(self, method, rest, query):
        if not self.check_cred("atomopay", query.get("api_token") == STATE.credentials["atomopay"]["api_token"]):
            return
        if method == "POST" and rest == "/transactions":
            b = self.json_body()
            if not isinstance(b, dict) or not isinstance(b.get("amount"), int) or b["amount"] <= 0 or not b.get("offer_hash"):
                return self.send(422, {"message": "amount and offer_hash are required"})
            create = lambda: self.new_charge("atomopay", b["amount"], b.get("reference", ""), b.get("postback_url", ""))
            if self.apply_fault("atomopay", "create", create):
                return
            return self.answer_create("atomopay", create())
        if method == "GET" and rest.startswith("/transactions/"):
            if self.apply_fault("atomopay", "status", None):
                return
            return self.answer_status("atomopay", self.find("atomopay", rest.split("/")[-1]))
        self.send(404, {"message": "not found"})

    def gw_paradise(self, method, rest, query):
        if not self.check_cred("paradise", self.headers.get("X-API-Key") == STATE.credentials["paradise"]["api_key"]):
            return
        if method == "POST" and rest == "/transaction.php":
            b = self.json_body()
            if not isinstance(b, dict) or not isinstance(b.get("amount"), int) or b["amount"] <= 0 or not b.get("reference"):
                return self.send(400, {"status": "error", "message": "amount and reference are required"})
            with STATE.lock:
                dup = any(c["gateway"] == "paradise" and c["reference"] == b["reference"] for c in STATE.charges)
            if dup:
                return self.send(409, {"status": "error", "message": "reference already used"})
            create = lambda: self.new_charge("paradise", b["amount"], b["reference"], b.get("postback_url", ""))
            if self.apply_fault("paradise", "create", create):
                return
            return self.answer_create("paradise", create())
        if method == "GET" and rest == "/check_status.php":
            if self.apply_fault("paradise", "status", None):
                return
            return self.answer_status("paradise", self.find("paradise", query.get("hash", "")))
        self.send(404, {"message": "not found"})

    def gw_umbrellapag(self, method, rest, query):
        if not self.check_cred("umbrellapag", self.headers.get("x-api-key") == STATE.credentials["umbrellapag"]["api_key"]):
            return
        if method == "POST" and rest == "/user/transactions":
            b = self.json_body()
            if (not isinstance(b, dict) or not isinstance(b.get("amount"), int) or b["amount"] <= 0
                    or b.get("paymentMethod") != "PIX" or not isinstance(b.get("metadata", ""), str)):
                return self.send(400, {"status": 400, "message": "invalid request"})
            try:
                reference = json.loads(b.get("metadata") or "{}").get("reference", "")
            except ValueError:
                reference = ""
            create = lambda: self.new_charge("umbrellapag", b["amount"], reference, b.get("postbackUrl", ""))
            if self.apply_fault("umbrellapag", "create", create):
                return
            return self.answer_create("umbrellapag", create())
        if method == "GET" and rest.startswith("/user/transactions/"):
            if self.apply_fault("umbrellapag", "status", None):
                return
            return self.answer_status("umbrellapag", self.find("umbrellapag", rest.split("/")[-1]))
        self.send(404, {"message": "not found"})

    def bearer_ok(self):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with STATE.lock:
            exp = STATE.tokens.get(token)
        return exp is not None and exp > time.time(), token

    def gw_syncpay(self, method, rest, query):
        if method == "POST" and rest == "/api/partner/v1/auth-token":
            if self.apply_fault("syncpay", "auth", None):
                return
            b = self.json_body() or {}
            cred = STATE.credentials["syncpay"]
            if not isinstance(b, dict) or b.get("client_id") != cred["client_id"] or b.get("client_secret") != cred["client_secret"]:
                return self.send(401, {"message": "Invalid credentials"})
            token = "sp_" + uuid.uuid4().hex
            with STATE.lock:
                STATE.tokens[token] = time.time() + STATE.token_ttl
                ttl = STATE.token_ttl
            return self.send(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})
        ok, token = self.bearer_ok()
        if not ok:
            return self.send(401, {"message": "Unauthenticated."})
        op = "create" if method == "POST" else "status"
        if method == "POST" and rest == "/api/partner/v1/cash-in":
            raw = self.body_bytes().decode("utf-8", "replace")
            b = self.json_body()
            cents = None
            if isinstance(b, dict) and isinstance(b.get("amount"), (int, float)) and not isinstance(b.get("amount"), bool):
                # Read the literal from the raw body to stay exact.
                marker = raw.find('"amount":')
                literal = raw[marker + 9:].split(",")[0].split("}")[0].strip() if marker >= 0 else ""
                cents = reais_to_cents(literal)
            if not cents or cents <= 0:
                return self.send(422, {"message": "The amount field is required."})
            create = lambda: self.new_charge("syncpay", cents, b.get("external_reference", ""), b.get("webhook_url", ""))
            f = STATE.take_fault("syncpay", "create") if self._peek_expired("create") else None
            if f:
                with STATE.lock:
                    STATE.tokens.pop(token, None)
                return self.send(401, {"message": "Unauthenticated."})
            if self.apply_fault("syncpay", "create", create):
                return
            return self.answer_create("syncpay", create())
        if method == "GET" and rest.startswith("/api/partner/v1/transaction/"):
            if self._peek_expired("status") and STATE.take_fault("syncpay", "status"):
                with STATE.lock:
                    STATE.tokens.pop(token, None)
                return self.send(401, {"message": "Unauthenticated."})
            if self.apply_fault("syncpay", op, None):
                return
            return self.answer_status("syncpay", self.find("syncpay", rest.split("/")[-1]))
        self.send(404, {"message": "not found"})

    def _peek_expired(self, op):
        with STATE.lock:
            return any(f.get("kind") == "expired_token" and f.get("gateway", "*") in ("*", "syncpay")
                       and f.get("op", "*") in ("*", op) for f in STATE.faults)

    # ---- control --------------------------------------------------------------------------
    def control(self, method, parts, query):
        what = parts[0]
        b = self.json_body() if method == "POST" else None
        if what == "shapes":
            return self.send(200, SHAPES)
        if what == "ledger":
            with STATE.lock:
                charges = [dict(c) for c in STATE.charges if query.get("gateway") in (None, c["gateway"])]
            return self.send(200, {"charges": charges})
        if what == "requests":
            with STATE.lock:
                reqs = [r for r in STATE.requests if query.get("gateway") in (None, r["gateway"])]
            return self.send(200, {"requests": reqs})
        if what == "reset":
            with STATE.lock:
                STATE.reset()
            return self.send(200, {"ok": True})
        if what == "fault" and isinstance(b, dict):
            b.setdefault("times", 1)
            with STATE.lock:
                STATE.faults.append(b)
            return self.send(200, {"ok": True})
        if what == "status" and isinstance(b, dict):
            c = self.find(b.get("gateway"), str(b.get("id")))
            if not c:
                return self.send(404, {"message": "no such charge"})
            with STATE.lock:
                c["status"] = b["status"]
                if "reference_override" in b:
                    c["reference_override"] = b["reference_override"]
            return self.send(200, {"ok": True})
        if what == "config" and isinstance(b, dict):
            with STATE.lock:
                if "token_ttl_seconds" in b:
                    STATE.token_ttl = b["token_ttl_seconds"]
                for g, cred in (b.get("credentials") or {}).items():
                    STATE.credentials[g].update(cred)
            return self.send(200, {"ok": True})
        if what == "expire_tokens":
            with STATE.lock:
                for t in STATE.tokens:
                    STATE.tokens[t] = 0
            return self.send(200, {"ok": True})
        if what == "webhook" and isinstance(b, dict):
            c = self.find(b.get("gateway"), str(b.get("id")))
            if not c:
                return self.send(404, {"message": "no such charge"})
            shape = b.get("shape")
            if shape and shape not in SHAPES[c["gateway"]]:
                return self.send(400, {"message": "unknown shape %r; known: %s" % (shape, SHAPES[c["gateway"]])})
            with STATE.lock:
                if b.get("status"):
                    c["status"] = b["status"]
                if shape == "refunded_paid":
                    # The gateway gave the money back: its status API says so too.
                    c["status"], c["refunds"] = "REFUNDED", [{"amount": c["amount_cents"]}]
            headers, payload = webhook_payload(c, shape)
            url = b.get("url") or c["postback_url"]
            if not url:
                return self.send(200, {"delivered": False, "headers": headers, "body": payload})
            req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers=dict(headers, **{"Content-Type": "application/json"}))
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except OSError as e:
                return self.send(200, {"delivered": False, "error": str(e), "headers": headers, "body": payload})
            return self.send(200, {"delivered": True, "status": code, "headers": headers, "body": payload})
        self.send(404, {"message": "unknown control endpoint"})


# Webhook shapes seen from each gateway's public integrations (observed, not documented); the
# first is the default. `webhook_payload` builds each.
SHAPES = {
    "atomopay": ["id_hash", "hash_status", "id_payment_status", "wrapped_data", "wrapped_transaction", "wrapped_payload",
                 "success_data"],
    "paradise": ["new", "old"],
    "umbrellapag": ["default", "data_data", "metadata_object", "refunded_paid"],
    "syncpay": ["default", "lowercase_ref", "string_amount"],
}


def reais(cents):
    return json.loads("%d.%02d" % (cents // 100, cents % 100))


def webhook_payload(c, shape=None):
    """(headers, body) of the webhook this gateway would post for charge c, in `shape`."""
    g, s = c["gateway"], c["status"]
    shape = shape or SHAPES[g][0]
    if shape not in SHAPES[g]:
        raise ValueError("unknown shape %r for %s (known: %s)" % (shape, g, ", ".join(SHAPES[g])))
    if g == "atomopay":
        tx = {"id": int(c["id"]), "hash": c["hash"], "payment_status": s, "amount": c["amount_cents"],
              "reference": c["reference"]}
        if shape == "hash_status":
            return {}, {"transaction_hash": c["hash"], "status": s, "amount": c["amount_cents"]}
        if shape == "id_payment_status":
            return {}, {"id": int(c["id"]), "payment_status": s, "amount": c["amount_cents"]}
        if shape.startswith("wrapped_"):
            return {}, {"event": "transaction.updated", shape[len("wrapped_"):]: tx}
        if shape == "success_data":
            return {}, {"success": True, "data": tx}
        return {}, tx
    if g == "paradise":
        if shape == "old":
            return {}, {"id": c["id"], "payment_status": "approved" if s == "paid" else s, "amount": c["amount_cents"]}
        return {}, {"transaction_id": c["id"], "external_id": c["reference"], "status": "approved" if s == "paid" else s,
                    "amount": c["amount_cents"]}
    if g == "umbrellapag":
        word = s.lower()
        data = {"id": c["id"], "status": word, "amount": c["amount_cents"],
                "metadata": json.dumps({"reference": c["reference"]})}
        if shape == "metadata_object":
            data["metadata"] = {"reference": c["reference"]}
        if shape == "refunded_paid":
            # The sale was given back; the event still says "paid" next to the refund.
            word = "paid"
            data.update(status="paid", refunds=[{"id": "rf_" + uuid.uuid4().hex[:8], "amount": c["amount_cents"]}])
        body = {"id": "evt_" + uuid.uuid4().hex[:12], "type": "transaction", "objectId": c["id"], "status": word}
        body["data"] = {"data": data} if shape == "data_data" else data
        return {}, body
    cents = c["amount_cents"]
    tx = {"id": c["id"], "status": s, "external_reference": c["reference"], "amount": reais(cents)}
    if shape == "lowercase_ref":
        tx["externalreference"] = tx.pop("external_reference")
    if shape == "string_amount":
        tx["amount"] = "%d.%02d" % (cents // 100, cents % 100)
    return {"event": "cashin.update"}, {"data": tx}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):  # resets and hung clients are expected
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    # A parent may have spawned us with signals blocked (e.g. from a libdispatch thread).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
    server = Server((args.host, args.port), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
