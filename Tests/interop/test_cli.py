"""The `pixtrack` CLI against a running pixtrackd: success, each error class, timeouts, auth,
reflection-driven list/describe, and --help on every subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import support
from tracking_support import psql

CLI = Path(os.environ.get("PIXTRACK_CLI", Path(support.pixtrackd_path()).parent / "pixtrack"))


@pytest.fixture(scope="module")
def srv():
    server = support.start_server("--enable-test-service", name="pixtrackd (cli)")
    yield server
    support.stop_and_check(server)


def run(*args, stdin=None, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PIXTRACK_")}
    e.update(env or {})
    res = subprocess.run([str(CLI), *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=e)
    return res.returncode, res.stdout, res.stderr


def addr(srv):
    return ["--addr", f"{support.HOST}:{srv.port}"]


def test_call_prints_pretty_json(srv):
    rc, out, err = run("call", "pixtrack.testing.v1.TestService/Echo", "-d", '{"text":"olá","payload":"AQI="}',
                       "-H", "x-trace: abc", *addr(srv))
    assert rc == 0, err
    got = json.loads(out)
    assert got["text"] == "olá" and got["payload"] == "AQI="
    assert {"key": "x-trace", "value": "abc"} in got["metadata"]
    assert out.startswith("{\n  ")


def test_call_reads_file_and_stdin(srv, tmp_path):
    f = tmp_path / "req.json"
    f.write_text('{"text":"from-file"}')
    rc, out, _ = run("call", "/pixtrack.testing.v1.TestService/Echo", "-d", f"@{f}", *addr(srv))
    assert rc == 0 and json.loads(out)["text"] == "from-file"
    rc, out, _ = run("call", "pixtrack.testing.v1.TestService.Echo", "-d", "-", *addr(srv), stdin='{"text":"stdin"}')
    assert rc == 0 and json.loads(out)["text"] == "stdin"


@pytest.mark.parametrize("code,name", [(3, "INVALID_ARGUMENT"), (5, "NOT_FOUND"), (9, "FAILED_PRECONDITION"),
                                       (13, "INTERNAL"), (14, "UNAVAILABLE")])
def test_error_status_is_printed_and_mapped_to_exit_code(srv, code, name):
    rc, out, err = run("call", "pixtrack.testing.v1.TestService/Echo", "-d",
                       json.dumps({"failCode": code, "failMessage": "pagamento não encontrado: 100%"}), *addr(srv))
    assert rc == 64 + code
    assert out == ""
    assert err.strip() == f"{name}: pagamento não encontrado: 100%"


def test_timeout_is_deadline_exceeded(srv):
    rc, _, err = run("call", "pixtrack.testing.v1.TestService/Sleep", "-d", '{"millis":5000}', "--timeout", "0.3", *addr(srv))
    assert rc == 64 + 4 and err.startswith("DEADLINE_EXCEEDED")


def test_unimplemented_and_unknown(srv):
    rc, _, err = run("call", "pixtrack.v1.PaymentService/ListGateways", *addr(srv))
    assert rc in (0, 76), err  # implemented later by the payments work
    rc, _, err = run("call", "no.Such/Method", *addr(srv))
    assert rc == 64 and "unknown method" in err


def test_bad_input_is_a_usage_error(srv):
    rc, _, err = run("call", "pixtrack.testing.v1.TestService/Echo", "-d", '{"text": 5}', *addr(srv))
    assert rc == 64 and "text" in err
    rc, _, err = run("call", "pixtrack.testing.v1.TestService/Echo", "-d", "{", *addr(srv))
    assert rc == 64 and "invalid" in err


def test_unreachable_server_is_unavailable():
    rc, _, err = run("health", "--addr", "127.0.0.1:1")
    assert rc == 64 + 14 and err.startswith("UNAVAILABLE")


def test_health_list_describe(srv):
    assert run("health", *addr(srv))[:2] == (0, "SERVING\n")
    rc, _, err = run("health", "no.such.Service", *addr(srv))
    assert rc == 64 + 5, err
    rc, out, _ = run("list", *addr(srv))
    assert rc == 0
    for s in ["grpc.health.v1.Health", "pixtrack.v1.PaymentService", "pixtrack.v1.TrackingService"]:
        assert s in out.split()
    rc, out, _ = run("list", "pixtrack.testing.v1.TestService", *addr(srv))
    assert out.split() == ["pixtrack.testing.v1.TestService/Sleep", "pixtrack.testing.v1.TestService/Echo"]
    rc, out, _ = run("describe", "pixtrack.testing.v1.TestService/Echo", *addr(srv))
    assert rc == 0
    assert "rpc Echo(pixtrack.testing.v1.EchoRequest) returns (pixtrack.testing.v1.EchoResponse)" in out
    assert "int32 fail_code = 3;" in out and "repeated pixtrack.testing.v1.MetadataEntry metadata = 3;" in out
    rc, out, _ = run("describe", "pixtrack.testing.v1.SleepRequest", *addr(srv))
    assert "uint32 millis = 1;" in out
    rc, _, err = run("describe", "pixtrack.testing.v1.Nope", *addr(srv))
    assert rc == 64 + 5, err


def test_token_from_flag_or_env():
    with support.start_server("--enable-test-service", env={"PIXTRACK_RPC_TOKEN": "cli-s3cret"},
                              name="pixtrackd (cli auth)") as s:
        a = ["--addr", f"{support.HOST}:{s.port}"]
        rc, _, err = run("call", "pixtrack.testing.v1.TestService/Echo", *a)
        assert rc == 64 + 16 and err.startswith("UNAUTHENTICATED")
        rc, _, err = run("call", "pixtrack.testing.v1.TestService/Echo", "--token", "wrong", *a)
        assert rc == 64 + 16
        assert run("call", "pixtrack.testing.v1.TestService/Echo", "--token", "cli-s3cret", *a)[0] == 0
        assert run("call", "pixtrack.testing.v1.TestService/Echo", *a, env={"PIXTRACK_RPC_TOKEN": "cli-s3cret"})[0] == 0
        assert run("health", *a)[0] == 0
        assert "cli-s3cret" not in s.log()


def test_meta_requeue(srv):
    pixel = str(900000000000000 + int(time.time() * 1000) % 99999999)
    now = int(time.time())
    for eid, t in ((f"pv-fresh-{pixel}", now), (f"pv-aged-{pixel}", now - 8 * 86400)):
        psql(f"INSERT INTO meta_events (pixel_id, event_name, event_id, event_time, payload, status, last_error) "
             f"VALUES ('{pixel}', 'PageView', '{eid}', {t}, '{{}}', 'parked', 'graph code 190: invalid token')")
    rc, out, err = run("meta", "requeue", "--pixel", pixel, "--dry-run", *addr(srv))
    assert rc == 0 and out.strip() == f"would requeue 1 parked event of pixel {pixel}; 1 too old for Meta, left parked", (out, err)
    rc, out, err = run("meta", "requeue", "--pixel", pixel, "--event-id", f"pv-aged-{pixel}", *addr(srv))
    assert rc == 0 and out.strip() == f"requeued 0 parked events of pixel {pixel}; 1 too old for Meta, left parked", (out, err)
    assert psql(f"SELECT string_agg(status, ',') FROM meta_events WHERE pixel_id = '{pixel}'") == "parked,parked"
    rc, _, err = run("meta", "requeue", "--pixel", "not-digits", *addr(srv))
    assert rc == 64 and "digits" in err


@pytest.mark.parametrize("sub", [[], ["call"], ["list"], ["describe"], ["health"], ["meta", "requeue"], ["plugin", "check"]])
def test_help_everywhere(sub):
    rc, out, _ = run(*sub, "--help")
    assert rc == 0 and "USAGE" in out.upper()
    if sub and sub[0] in ("call", "list", "describe", "health", "meta"):
        assert "Examples" in out


def test_a_token_on_the_command_line_is_warned_about_and_a_token_file_is_not(srv, tmp_path):
    rc, out, err = run("health", "--token", "cli-token-visible-in-ps", *addr(srv))
    assert rc == 0 and "--token is visible to other users" in err, (rc, err)
    assert "cli-token-visible-in-ps" not in err
    f = tmp_path / "token"
    f.write_text("cli-token-from-a-file\n")
    rc, out, err = run("health", "--token-file", str(f), *addr(srv))
    assert rc == 0 and "warning" not in err, (rc, err)
    rc, _, err = run("health", "--token-file", str(tmp_path / "missing"), *addr(srv))
    assert rc == 64 and "--token-file" in err, (rc, err)


def test_plugin_bench_times_both_isolation_modes():
    """`pixtrack plugin bench` (what scripts/bench prints for the runner's cost): it runs the
    sandbox in a runner and in-process and prints a figure for each; no speed is asserted."""
    sandbox = support.pixtrackd_path().parent / "libsandbox.so"
    rc, out, err = run("plugin", "bench", str(sandbox), "--calls", "50", "--rounds", "1", timeout=60)
    assert rc == 0, err
    assert "plugin-runner: get_status p50" in out and "plugin-in-process: get_status p50" in out, out
    assert "runner cost per call" in out
    rc, _, err = run("plugin", "bench", "/nonexistent.so")
    assert rc != 0 and "/nonexistent.so" in err, err
