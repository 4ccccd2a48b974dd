"""scripts/bench's WatchPayments figures (run by it, with the interop venv's grpcio):
webhook received -> event on a watcher, p50/p99; RSS of 1,000 concurrent watchers over idle.

usage: bench-watch.py PORT WEBHOOK_SECRET PID [PAYMENTS] [WATCHERS]
Raw bytes on the wire (no generated stubs): the few fields needed are encoded and decoded here."""

import http.client
import json
import sys
import threading
import time

import grpc

port, secret, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
payments = int(sys.argv[4]) if len(sys.argv) > 4 else 200
watchers = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
BOT = 4545


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def fields(b):
    """{field number: last value} of a message (varints as ints, length-delimited as bytes)."""
    out, i = {}, 0
    while i < len(b):
        key, i = read_varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num], i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            out[num], i = b[i:i + n], i + n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
    return out


def connect(method, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/" + method, json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (method, r.status, data)
    return json.loads(data or b"{}")


def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


ident = lambda b: b
connect("pixtrack.v1.TrackingService/UpsertBot", {"id": str(BOT), "telegramUsername": "benchwatch", "enabled": True,
                                                  "gateway": {"plugin": "sandbox"}})
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
watch = ch.unary_stream("/pixtrack.v1.PaymentService/WatchPayments", request_serializer=ident, response_deserializer=ident)
generate = ch.unary_unary("/pixtrack.v1.PaymentService/GeneratePix", request_serializer=ident, response_deserializer=ident)

# --- webhook received -> event on the watcher ---------------------------------------------------
paid_at = {}
ready = threading.Event()


def consume():
    call = watch(b"\x08" + varint(BOT))
    ready.set()
    for ev in call:
        f = fields(ev)
        if 2 in f:
            p = fields(f[2])
            if p.get(3) == 3:  # PAYMENT_STATUS_PAID
                paid_at[p[1]] = time.perf_counter()


threading.Thread(target=consume, daemon=True).start()
ready.wait()
time.sleep(0.5)
sent_at, latencies = {}, []
hook = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in range(payments):
    p = fields(generate(b"\x08" + varint(BOT) + b"\x10" + varint(7000 + i) + b"\x18" + varint(1990), timeout=30))
    pid_, txid = p[1], p[5].decode()
    body = json.dumps({"action": "pay", "transaction_id": txid})
    sent_at[pid_] = time.perf_counter()
    hook.request("POST", f"/webhooks/sandbox/{secret}", body, {"content-type": "application/json"})
    r = hook.getresponse()
    r.read()
    assert r.status == 200, r.status
    deadline = time.time() + 10
    while pid_ not in paid_at and time.time() < deadline:
        time.sleep(0.0005)
    if pid_ in paid_at:
        latencies.append((paid_at[pid_] - sent_at[pid_]) * 1000)
lat = sorted(latencies)
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
print(f"webhook -> paid event on a watcher: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms over {len(lat)}/{payments} payments "
      f"(goal p99 <= 100 ms; includes the gateway status check)")

# --- 1,000 concurrent watchers -------------------------------------------------------------------
time.sleep(1)
idle = rss_kib()
per_channel = 10  # under the per-connection limit (16)
channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(watchers // per_channel)]
calls, got = [], [0]
lock = threading.Lock()


def drain(call):
    try:
        for ev in call:
            if 2 in fields(ev):
                with lock:
                    got[0] += 1
    except grpc.RpcError:
        pass


for c in channels:
    w = c.unary_stream("/pixtrack.v1.PaymentService/WatchPayments", request_serializer=ident, response_deserializer=ident)
    for _ in range(per_channel):
        call = w(b"\x08" + varint(BOT))
        calls.append(call)
        threading.Thread(target=drain, args=(call,), daemon=True).start()
time.sleep(3)
generate(b"\x08" + varint(BOT) + b"\x10" + varint(9999) + b"\x18" + varint(1990), timeout=30)  # 2 events to everyone
deadline = time.time() + 30
while got[0] < 2 * len(calls) and time.time() < deadline:
    time.sleep(0.05)
time.sleep(1)
full = rss_kib()
print(f"{len(calls)} concurrent watchers: RSS {idle // 1024} MiB idle -> {full // 1024} MiB (+{(full - idle) / 1024:.1f} MiB; "
      f"goal <= +64 MiB); {got[0]}/{2 * len(calls)} events delivered to them")
for call in calls:
    call.cancel()
