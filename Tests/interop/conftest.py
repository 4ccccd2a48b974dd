"""Fixtures for the pixtrackd interop suite.

The suite builds nothing: `make test` builds first. The binary comes from $PIXTRACKD
(default .build/debug/pixtrackd). Python stubs for Proto/pixtrack/**.proto are generated into a
temporary folder when the suite starts; health and reflection use grpcio's own packages.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import support
from tracking_support import FakeMeta, new_schema

# --- stubs ----------------------------------------------------------------------------------------


def _generate_stubs() -> Path:
    proto_root = support.REPO / "Proto"
    # Only our own packages: Proto/grpc/** would generate a `grpc` package shadowing grpcio.
    protos = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "pixtrack").rglob("*.proto"))
    if not any(p.endswith("testing/v1/testing.proto") for p in protos):
        raise RuntimeError(f"Proto/pixtrack/testing/v1/testing.proto is missing (found: {protos})")
    import grpc_tools

    out = Path(tempfile.mkdtemp(prefix="pixtrack-interop-stubs-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"-I{wkt}",
           f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    res = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return out


sys.path.insert(0, str(_generate_stubs()))


def _secrets_key() -> None:
    """Servers seal bot secrets with PIXTRACK_SECRETS_KEY_FILE (`make test` gives one per run);
    run by hand, the suite makes a throwaway key."""
    import base64
    import os
    if os.environ.get("PIXTRACK_SECRETS_KEY_FILE"):
        return
    folder = Path(tempfile.mkdtemp(prefix="pixtrack-interop-key-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "secrets.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    os.environ["PIXTRACK_SECRETS_KEY_FILE"] = str(path)


_secrets_key()


# --- servers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server():
    """One pixtrackd per test module, with the test service."""
    server = support.start_server("--enable-test-service", name="pixtrackd (module)")
    yield server
    if server.alive():
        support.stop_and_check(server)
    else:
        pytest.fail(f"pixtrackd died during the module ({support.exit_description(server.proc.returncode)}):\n"
                    + server.log(last=200))


@pytest.fixture
def server(shared_server):
    """The module's pixtrackd; after each test it must still be running."""
    if not shared_server.alive():
        pytest.fail("pixtrackd died in an earlier test of this module:\n" + shared_server.log(last=100))
    yield shared_server
    assert shared_server.alive(), (
        f"pixtrackd died during this test ({support.exit_description(shared_server.proc.returncode)}):\n"
        + shared_server.log(last=200))


# --- tracking and payments modules: the fake Graph API and a private schema, one each per module ---


@pytest.fixture(scope="module")
def meta():
    m = FakeMeta()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def db_url():
    return new_schema()


@pytest.fixture(scope="module")
def fakes():
    """The fake ÁtomoPay, Paradise, UmbrellaPag and SyncPay APIs (Tests/fakes/fake_gateways.py)."""
    from payments_support import FakeGateways
    f = FakeGateways()
    yield f
    f.stop()


# --- reporting ---------------------------------------------------------------------------------------

_test_started = 0.0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _test_started
    _test_started = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    # The logs of the servers that were running during this test.
    for s in support.STARTED:
        if s.stopped_at is None or s.stopped_at >= _test_started:
            report.sections.append((f"{s.name} log (port {s.port})", s.log(last=200) or "(empty)"))


def pytest_terminal_summary(terminalreporter):
    if support.FIGURES:
        terminalreporter.section("pixtrackd figures")
        for line in support.FIGURES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session):
    # Never leave a server behind, whatever happened.
    for s in support.STARTED:
        s.kill()
