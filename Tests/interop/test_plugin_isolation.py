"""Plugins in runner processes (the default): a third party's plugin that segfaults on every
create_pix leaves the server SERVING and every other bot fully working; its payments stay
pending_verification (never lost, never failed) for the reconciler; it is restarted, reported
unhealthy in ListGateways and /metrics, and its crashes are logged with the signal."""

from __future__ import annotations

import shutil
import subprocess
import time

import grpc
import pytest

import support
from payments_support import Client, payment_env
from tracking_support import metric, new_schema, wait_until

from pixtrack.v1 import payment_pb2 as ppb

REPO = support.REPO


def build_fixture(mode: int, out: str) -> None:
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Werror", f"-DFIXTURE_MODE={mode}",
                    "-I", f"{REPO}/Sources/GatewayABI/include", "-I", f"{REPO}/Sources/PixTrackProto/include",
                    f"{REPO}/Tests/fixtures/plugins/misbehaving.c", f"{REPO}/Sources/PixTrackProto/pixtrack/v1/gateway.pb-c.c",
                    "-lprotobuf-c", "-o", out], check=True, capture_output=True)


@pytest.fixture(scope="module")
def srv(meta, db_url, tmp_path_factory):
    plugins = tmp_path_factory.mktemp("plugins")
    build_fixture(17, str(plugins / "libcrashy.so"))  # MODE_SEGV: create_pix segfaults, every time
    shutil.copy(support.pixtrackd_path().parent / "libsandbox.so", plugins / "libsandbox.so")
    s = support.start_server(env=payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_PLUGIN_DIR=str(plugins)),
                             name="pixtrackd (a crashing plugin)")
    yield s
    support.stop_and_check(s)


@pytest.fixture(scope="module")
def cl(srv):
    c = Client(srv.port)
    yield c
    c.close()


def gateways(cl) -> dict[str, ppb.Gateway]:
    return {g.name: g for g in cl.pay.ListGateways(ppb.ListGatewaysRequest(), timeout=10).gateways}


def test_a_segfaulting_plugin_takes_down_only_its_runner(srv, cl):
    listed = gateways(cl)
    assert listed["fixture"].isolation == "runner" and listed["sandbox"].isolation == "runner"
    crashy = cl.bot(gateway="fixture", credentials={"api_key": "k3y-secret"})
    healthy = cl.bot(gateway="sandbox")
    crashed: list[ppb.Payment] = []
    for i in range(4):
        t0 = time.monotonic()
        p = cl.generate(crashy.id, user=7000 + i, cents=1991 + 2 * i)
        crashed.append(p)
        # A crash during the call: the row exists and waits for the reconciler (the charge may
        # exist). Once the plugin is held back after 3 crashes in a row, calls never reach it:
        # nothing left, so nothing can exist at the gateway, and the payment may fail honestly.
        assert p.reference.startswith("PAY-"), p
        if i < 3:
            assert p.status == ppb.PAYMENT_STATUS_PENDING_VERIFICATION, p
        else:
            assert p.status in (ppb.PAYMENT_STATUS_PENDING_VERIFICATION, ppb.PAYMENT_STATUS_FAILED), p
        support.figure(f"crashing plugin, call {i + 1}: GeneratePix answered in {(time.monotonic() - t0) * 1000:.0f} ms "
                       f"({ppb.PaymentStatus.Name(p.status)})")
        # Everything else keeps working between the crashes.
        ok = cl.generate(healthy.id, user=8000 + i, cents=1990)
        assert ok.status == ppb.PAYMENT_STATUS_PENDING and ok.pix_code, ok
        support.assert_serving(srv)
    first = cl.get(crashed[0].id)
    assert first.status in (ppb.PAYMENT_STATUS_PENDING_VERIFICATION, ppb.PAYMENT_STATUS_UNRESOLVED), first
    log = srv.log()
    assert "event=plugin_runner_died" in log and "signal 11" in log, log[-2000:]
    assert "k3y-secret" not in log
    # Crash after crash: reported, counted, and held back.
    wait_until(lambda: gateways(cl)["fixture"].runner_restarts >= 1, timeout=15, what="a runner restart")
    g = gateways(cl)
    support.figure(f"crashing plugin: runner_restarts={g['fixture'].runner_restarts}, healthy={g['fixture'].healthy}; "
                   f"sandbox healthy={g['sandbox'].healthy}")
    assert g["fixture"].healthy is False and g["sandbox"].healthy is True
    assert metric(srv.port, 'pixtrack_plugin_healthy{plugin="fixture"}') == 0
    assert metric(srv.port, 'pixtrack_plugin_healthy{plugin="sandbox"}') == 1
    assert metric(srv.port, 'pixtrack_plugin_runner_restarts_total{plugin="fixture"}') >= 1


class Ledger:
    """A gateway's side of the story on loopback (real HTTP): the charges it recorded, by
    reference. The fixture plugin (MODE_CHARGE_SEGV) records a charge here, then segfaults
    before answering; its get_status looks the charge up by reference."""

    def __init__(self):
        import http.server
        import threading
        self.charges: dict[str, list] = {}
        self.lock = threading.Lock()
        ledger = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code: int, body: str):
                data = body.encode()
                self.send_response(code)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                reference, cents = self.rfile.read(int(self.headers["content-length"])).decode().split()
                with ledger.lock:
                    ledger.charges[reference] = [f"fx-{len(ledger.charges) + 1}", "pending", int(cents)]
                self.answer(201, "recorded")

            def do_GET(self):
                with ledger.lock:
                    c = ledger.charges.get(self.path.rsplit("/", 1)[-1])
                self.answer(200, f"{c[0]} {c[1]} {c[2]}") if c else self.answer(404, "no such charge")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pay(self, reference: str):
        with self.lock:
            self.charges[reference][1] = "paid"


def test_a_charge_whose_create_pix_crashed_is_later_reconciled(meta, tmp_path):
    """The plugin made the charge at the gateway, then segfaulted before answering: the payment
    waits as pending_verification, the reconciler finds the charge by reference through the
    restarted runner, binds its transaction id, and follows it to paid. Nothing is lost."""
    # A schema of its own: the reconciler checks only this payment (the module's other payments
    # belong to a gateway this server does not load).
    db_url = new_schema()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    build_fixture(25, str(plugins / "libledger.so"))  # MODE_CHARGE_SEGV
    ledger = Ledger()
    s = support.start_server(env=payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_PLUGIN_DIR=str(plugins)),
                             name="pixtrackd (a plugin that crashes after charging)")
    c = Client(s.port)
    try:
        bot = c.bot(gateway="fixture", base_url=ledger.url, credentials={"api_key": "k3y-secret"})
        p = c.generate(bot.id, user=7100, cents=2345)
        assert p.status == ppb.PAYMENT_STATUS_PENDING_VERIFICATION, p
        assert ledger.charges.get(p.reference, [None])[0], f"the charge was made at the gateway: {ledger.charges}"
        found = wait_until(lambda: (q := c.get(p.id)).status == ppb.PAYMENT_STATUS_PENDING and q, timeout=30,
                           what="the reconciler to find the charge by reference")
        assert found.gateway_transaction_id == ledger.charges[p.reference][0], found
        ledger.pay(p.reference)
        paid = wait_until(lambda: (q := c.get(p.id)).status == ppb.PAYMENT_STATUS_PAID and q, timeout=30,
                          what="the reconciler to see it paid")
        assert paid.amount_cents == 2345 and paid.gateway_transaction_id == found.gateway_transaction_id
        support.figure(f"crashed create_pix: {p.reference} pending_verification -> pending ({found.gateway_transaction_id}) -> paid; "
                       f"runner restarts {gateways(c)['fixture'].runner_restarts}")
        assert "signal 11" in s.log() and "k3y-secret" not in s.log()
        support.assert_serving(s)
    finally:
        c.close()
        support.stop_and_check(s)


def test_a_plugin_in_a_runner_is_confined_and_its_stray_log_lines_reach_the_host_redacted(meta, db_url, tmp_path):
    """Seen from pixtrackd: the runner refuses the plugin its own network, programs and
    tracing (the create_pix error says what each attempt got), the runner is not restarted
    for it, and a line the plugin logs outside any call is written by the host, redacted."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    build_fixture(26, str(plugins / "libconfined.so"))  # MODE_SYSCALLS
    s = support.start_server(env=payment_env(db_url, meta, PIXTRACK_META_SENDER="0", PIXTRACK_PLUGIN_DIR=str(plugins)),
                             name="pixtrackd (a plugin that tries what the runner refuses)")
    c = Client(s.port)
    try:
        bot = c.bot(gateway="fixture", credentials={"api_key": "k3y-secret"})
        p = c.generate(bot.id, user=7200, cents=2000)
        assert p.status == ppb.PAYMENT_STATUS_FAILED, p  # an error before any request: NOT_SENT
        assert "inet=EPERM exec=EPERM ptrace=EPERM unix=ok" in c.get(p.id).gateway_message, c.get(p.id)
        wait_until(lambda: "plugin=unattributed" in s.log(), timeout=10, what="the stray log line")
        line = next(l for l in s.log().splitlines() if "plugin=unattributed" in l)
        assert "unattributed line" in line and "fixture-s3cret" not in line, line
        assert gateways(c)["fixture"].runner_restarts == 0
    finally:
        c.close()
        support.stop_and_check(s)
