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
from tracking_support import metric, wait_until

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
