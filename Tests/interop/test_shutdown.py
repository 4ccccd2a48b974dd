"""Graceful shutdown: SIGTERM sends GOAWAY, lets in-flight calls finish, exits 0."""

import signal
import time

import grpc
from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc

import support


def test_sigterm_lets_an_in_flight_call_finish():
    server = support.start_server("--enable-test-service", name="pixtrackd (shutdown)")
    try:
        with support.channel(server.port) as ch:
            stub = testing_pb2_grpc.TestServiceStub(ch)
            fut = stub.Sleep.future(testing_pb2.SleepRequest(millis=1000), timeout=10)
            time.sleep(0.3)
            t0 = time.monotonic()
            server.signal(signal.SIGTERM)
            resp = fut.result()
            rc = server.wait(12)
            exit_after = time.monotonic() - t0
    finally:
        server.kill()
    support.figure(f"SIGTERM with Sleep(1000) in flight: call ok, exit {rc} after {exit_after:.2f} s")
    assert resp.slept_millis >= 1000, resp
    assert rc == 0, f"{support.exit_description(rc)}:\n{server.log()}"
    assert exit_after < 5.0, "exit took far longer than the in-flight call"


def test_sigterm_sends_goaway_to_idle_connections():
    server = support.start_server("--enable-test-service", name="pixtrackd (goaway)")
    try:
        with support.H2Client(server.port) as c:
            c.settle(0.3)
            server.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while c.goaway is None and not c.closed and time.monotonic() < deadline:
                c.pump(0.1)
            goaway = c.goaway
        rc = server.wait(12)
    finally:
        server.kill()
    assert goaway is not None, "no GOAWAY before the connection ended"
    assert goaway.error_code == 0, goaway  # NO_ERROR
    assert rc == 0, f"{support.exit_description(rc)}:\n{server.log()}"


def test_grace_period_bounds_shutdown():
    """A call longer than --grace-seconds does not keep the process alive."""
    server = support.start_server("--enable-test-service", "--grace-seconds", "1",
                                  name="pixtrackd (grace 1 s)")
    try:
        with support.channel(server.port) as ch:
            stub = testing_pb2_grpc.TestServiceStub(ch)
            fut = stub.Sleep.future(testing_pb2.SleepRequest(millis=20000), timeout=30)
            time.sleep(0.3)
            t0 = time.monotonic()
            server.signal(signal.SIGTERM)
            rc = server.wait(10)
            exit_after = time.monotonic() - t0
            try:
                fut.result(timeout=5)
                outcome = "OK"
            except grpc.RpcError as e:
                outcome = e.code().name
            except grpc.FutureTimeoutError:
                outcome = "still pending 5 s after the server exited"
    finally:
        server.kill()
    support.figure(f"--grace-seconds 1 with Sleep(20000) in flight: {support.exit_description(rc)} "
                   f"after {exit_after:.2f} s, the call ended {outcome}")
    assert exit_after < 3.5, exit_after
    assert outcome not in ("OK", "still pending 5 s after the server exited"), outcome


def test_idle_server_exits_promptly():
    server = support.start_server(name="pixtrackd (idle)")
    t0 = time.monotonic()
    support.stop_and_check(server)
    elapsed = time.monotonic() - t0
    assert elapsed < 4.0, f"idle shutdown took {elapsed:.2f} s"


def test_cancelled_and_expired_calls_free_their_handlers():
    """Sleep honours cancellation: after a cancelled call, an expired one and a vanished
    client, nothing is in flight, so SIGTERM (grace 10 s) exits at once."""
    server = support.start_server("--enable-test-service", name="pixtrackd (cancellation)")
    try:
        with support.channel(server.port) as ch:
            stub = testing_pb2_grpc.TestServiceStub(ch)
            fut = stub.Sleep.future(testing_pb2.SleepRequest(millis=20000), timeout=30)
            try:
                stub.Sleep(testing_pb2.SleepRequest(millis=20000), timeout=0.3)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            fut.cancel()
            c = support.H2Client(server.port)
            c.request("/pixtrack.testing.v1.TestService/Sleep",
                      support.grpc_message(testing_pb2.SleepRequest(millis=20000).SerializeToString()))
            time.sleep(0.2)
            c.close()
            time.sleep(0.3)
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        rc = server.wait(15)
        exit_after = time.monotonic() - t0
    finally:
        server.kill()
    support.figure(f"SIGTERM after cancelled/expired/abandoned Sleep(20000) calls: exit {rc} "
                   f"after {exit_after:.2f} s")
    assert rc == 0, f"{support.exit_description(rc)}:\n{server.log()}"
    assert exit_after < 2.0, "a cancelled Sleep kept running until the grace period ended"
