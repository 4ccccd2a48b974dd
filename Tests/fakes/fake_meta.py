#!/usr/bin/env python3
"""A fake Meta Graph API (Conversions API) on loopback, for tests.

    POST /{version}/{pixel_id}/events?access_token=T   body {"data": [...], "test_event_code"?: "..."}

Every request is checked the way Meta does it (docs/DESIGN.md §3): JSON body, 1..1000 events,
website events with event_name, integer event_time (Unix seconds, not older than 7 days, not in
the future), event_id, action_source "website", event_source_url, user_data with
client_user_agent; fbp/fbc in Meta's formats and unhashed; external_id as SHA-256 hex. One bad
event rejects the whole batch with Graph error code 100, as Meta does. A missing token is 190.

Control endpoints (JSON):
    GET  /_control/events      {"events": [...]} every event accepted, in order, each with
                               "pixel_id", "access_token", "test_event_code" added
    GET  /_control/requests    {"requests": [...]} every events request: pixel, count, answer status
    POST /_control/reset       forget events, requests and faults
    POST /_control/fault       queue a fault for the next matching requests:
                               {"kind": K, "times": 1, "pixel": optional, "latency_ms": 0, "code": 2}
                               kinds: http500, transient (code 2, is_transient true, HTTP 500),
                               code (Graph error `code`, HTTP 400, e.g. 100, 190, 613),
                               rate_limit (HTTP 429 code 4), latency (wait, then answer normally),
                               slow_answer (accept and record the events, then wait before answering)
    POST /_control/reject_event  {"event_id": "..."}: any batch containing it gets code 100
    POST /_control/token       {"pixel": P, "token": T}: only T is accepted for P (else 190)

Usage: fake_meta.py [--port 0]   prints the port on the first line of stdout, then serves.
"""
import argparse
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FBP = re.compile(r"^fb\.\d\.\d{10,16}\.\d{1,20}$")
FBC = re.compile(r"^fb\.\d\.\d{10,16}\.[\x21-\x7e]{1,255}$")
SHA = re.compile(r"^[0-9a-f]{64}$")
PATH = re.compile(r"^/(v\d+\.\d+)/(\d+)/events$")

lock = threading.Lock()
state = {"events": [], "requests": [], "faults": [], "reject": set(), "tokens": {}}


def graph_error(code, message, transient=False, status=400):
    return status, {"error": {"message": message, "type": "OAuthException", "code": code,
                              "is_transient": transient, "fbtrace_id": "FakeTrace"}}


def validate(event):
    """The problem with one event, or None."""
    if not isinstance(event, dict):
        return "event is not an object"
    for key in ("event_name", "event_id", "action_source", "event_source_url"):
        if not isinstance(event.get(key), str) or not event[key]:
            return f"missing {key}"
    if event["action_source"] != "website":
        return "action_source must be website"
    t = event.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        return "event_time must be an integer (Unix seconds)"
    now = int(time.time())
    if t > now + 60:
        return "event_time is in the future"
    if t < now - 7 * 86400:
        return "event_time is older than 7 days"
    ud = event.get("user_data")
    if not isinstance(ud, dict) or not ud.get("client_user_agent"):
        return "user_data.client_user_agent is required for website events"
    if "fbp" in ud and not FBP.match(ud["fbp"]):
        return "fbp is malformed (or hashed)"
    if "fbc" in ud and not FBC.match(ud["fbc"]):
        return "fbc is malformed (or hashed)"
    ext = ud.get("external_id")
    for e in (ext if isinstance(ext, list) else [ext] if ext is not None else []):
        if not isinstance(e, str) or not SHA.match(e):
            return "external_id must be SHA-256 hex"
    if event["event_id"] in state["reject"]:
        return "rejected on request"
    return None


def take_fault(pixel):
    with lock:
        for f in state["faults"]:
            if f.get("times", 1) > 0 and f.get("pixel") in (None, pixel):
                f["times"] = f.get("times", 1) - 1
                return dict(f)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        with lock:
            if self.path == "/_control/events":
                return self.reply(200, {"events": state["events"]})
            if self.path == "/_control/requests":
                return self.reply(200, {"requests": state["requests"]})
        self.reply(404, {"error": "no such path"})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        raw = self.body()
        if url.path.startswith("/_control/"):
            return self.control(url.path, json.loads(raw or b"{}"))
        m = PATH.match(url.path)
        if not m:
            return self.reply(*graph_error(803, f"unknown path {url.path}", status=404))
        pixel = m.group(2)
        token = urllib.parse.parse_qs(url.query).get("access_token", [""])[0]
        self.slow_answer_ms = 0
        status, answer, count = self.events(pixel, token, raw)
        with lock:
            state["requests"].append({"pixel_id": pixel, "events": count, "status": status,
                                      "code": answer.get("error", {}).get("code")})
        if self.slow_answer_ms:  # accepted and recorded; the answer is late (or never arrives)
            time.sleep(self.slow_answer_ms / 1000)
        self.reply(status, answer)

    def events(self, pixel, token, raw):
        fault = take_fault(pixel)
        if fault and fault.get("kind") == "slow_answer":
            self.slow_answer_ms = fault.get("latency_ms", 0)
            fault = None
        elif fault and fault.get("latency_ms"):
            time.sleep(fault["latency_ms"] / 1000)
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return (*graph_error(100, "content type must be application/json"), 0)
        try:
            doc = json.loads(raw)
        except ValueError:
            return (*graph_error(100, "body is not JSON"), 0)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            return (*graph_error(100, "data must hold 1 to 1000 events"), 0)
        n = len(data)
        if fault:
            kind = fault.get("kind")
            if kind == "http500":
                return 500, {"error": {"message": "internal", "code": 1, "is_transient": False}}, n
            if kind == "transient":
                return (*graph_error(fault.get("code", 2), "temporary", transient=True, status=500), n)
            if kind == "code":
                return (*graph_error(fault["code"], f"fault code {fault['code']}"), n)
            if kind == "rate_limit":
                return (*graph_error(4, "too many calls", status=429), n)
        if not token:
            return (*graph_error(190, "missing access token"), n)
        expected = state["tokens"].get(pixel)
        if expected is not None and token != expected:
            return (*graph_error(190, "invalid access token"), n)
        tec = doc.get("test_event_code")
        if tec is not None and not isinstance(tec, str):
            return (*graph_error(100, "test_event_code must be a string"), n)
        for i, ev in enumerate(data):
            problem = validate(ev)
            if problem:
                return (*graph_error(100, f"Invalid parameter: event {i}: {problem}"), n)
        with lock:
            for ev in data:
                state["events"].append(dict(ev, pixel_id=pixel, access_token=token, test_event_code=tec))
        return 200, {"events_received": n, "messages": [], "fbtrace_id": "FakeTrace"}, n

    def control(self, path, req):
        with lock:
            if path == "/_control/reset":
                state.update(events=[], requests=[], faults=[], reject=set(), tokens={})
            elif path == "/_control/fault":
                state["faults"].append(dict(req, times=req.get("times", 1)))
            elif path == "/_control/reject_event":
                state["reject"].add(req["event_id"])
            elif path == "/_control/token":
                state["tokens"][req["pixel"]] = req["token"]
            else:
                return self.reply(404, {"error": "unknown control path"})
        self.reply(200, {"ok": True})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
