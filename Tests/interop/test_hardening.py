"""Process hardening: pixtrackd's memory holds credentials and tokens, so by default it cannot
leave a core file (RLIMIT_CORE 0, not dumpable) unless PIXTRACK_ALLOW_CORE_DUMPS=1."""

from __future__ import annotations

import resource

import pytest

import support


def core_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4]  # the soft limit
    raise AssertionError("no core limit line")


@pytest.fixture
def cores_allowed_by_the_shell():
    """The test process (and so the server) starts with core files allowed, as a shell might."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.fail("this machine forbids core files outright (hard RLIMIT_CORE 0): nothing to check")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def test_no_core_files_by_default(cores_allowed_by_the_shell):
    with support.start_server(name="pixtrackd (hardened)") as s:
        assert core_limit(s.proc.pid) == "0"
        support.assert_serving(s)


def test_core_files_when_asked(cores_allowed_by_the_shell):
    with support.start_server(env={"PIXTRACK_ALLOW_CORE_DUMPS": "1"}, name="pixtrackd (core dumps allowed)") as s:
        assert core_limit(s.proc.pid) != "0"
        assert "event=core_dumps_allowed" in s.log()
