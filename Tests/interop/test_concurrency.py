"""Many calls and connections at once; slow handlers must not block the I/O loop."""

import threading
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc
from pixtrack.testing.v1 import testing_pb2, testing_pb2_grpc

import support


def sleep_futures(stub, n, millis, timeout=15):
    return [stub.Sleep.future(testing_pb2.SleepRequest(millis=millis), timeout=timeout)
            for _ in range(n)]


def test_slow_calls_do_not_block_the_io_loop(server):
    """50 Sleep(5000) in flight on ONE connection; health checks on it still answer fast."""
    with support.channel(server.port) as ch:
        stub = testing_pb2_grpc.TestServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # warm up the connection
        t0 = time.monotonic()
        futures = sleep_futures(stub, 50, 5000)
        time.sleep(0.25)
        latencies = []
        for _ in range(20):
            t = time.perf_counter()
            resp = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            latencies.append(time.perf_counter() - t)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        still_running = sum(not f.done() for f in futures)
        results = [f.result() for f in futures]
        total = time.monotonic() - t0
    ms = sorted(x * 1000 for x in latencies)
    support.figure(f"health during 50 x Sleep(5000) on one connection: min {ms[0]:.1f} ms, "
                   f"median {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f} ms; sleeps still running "
                   f"after the checks: {still_running}/50; all 50 sleeps done in {total:.2f} s")
    # A blocked loop would hold a check for seconds; the margins allow for a busy CI machine.
    assert ms[len(ms) // 2] < 100 and max(ms) < 500, ms
    assert still_running == 50, "the health checks did not overlap the sleeps"
    assert all(r.slept_millis >= 5000 for r in results)
    assert total < 8.0, total


def test_at_least_100_concurrent_streams_on_one_connection(server):
    """100 x Sleep(3000) can finish in one round only if all 100 streams run at once."""
    with support.channel(server.port) as ch:
        stub = testing_pb2_grpc.TestServiceStub(ch)
        support.health_check(ch)
        t0 = time.monotonic()
        results = [f.result() for f in sleep_futures(stub, 100, 3000)]
        t100 = time.monotonic() - t0
        t0 = time.monotonic()
        results += [f.result() for f in sleep_futures(stub, 150, 500)]
        t150 = time.monotonic() - t0
    support.figure(f"one connection: 100 x Sleep(3000) in {t100:.2f} s, 150 x Sleep(500) in {t150:.2f} s")
    assert len(results) == 250
    assert t100 < 5.5, f"100 concurrent Sleep(3000) took {t100:.2f} s: streams were serialised"
    assert t150 < 4.0, t150


def test_max_concurrent_streams_setting(server):
    """If the server limits SETTINGS_MAX_CONCURRENT_STREAMS, the limit is at least 100."""
    with support.H2Client(server.port) as c:
        c.settle(0.5)
        assert not c.closed and c.goaway is None, "the server closed an idle new connection"
        limit = c.remote_settings.get(support.SETTINGS_MAX_CONCURRENT_STREAMS)
    support.figure(f"server SETTINGS: {c.remote_settings}")
    assert limit is None or limit >= 100, limit


def test_many_connections(server):
    """50 channels, each its own connection (local subchannel pools), all calling at once."""
    channels = [support.channel(server.port, ("grpc.use_local_subchannel_pool", 1))
                for _ in range(50)]
    try:
        t0 = time.monotonic()
        futures = [testing_pb2_grpc.TestServiceStub(ch).Sleep.future(
            testing_pb2.SleepRequest(millis=500), timeout=10) for ch in channels]
        echoes = [testing_pb2_grpc.TestServiceStub(ch).Echo(
            testing_pb2.EchoRequest(text=str(i)), timeout=5).text for i, ch in enumerate(channels)]
        sleeps = [f.result() for f in futures]
        elapsed = time.monotonic() - t0
    finally:
        for ch in channels:
            ch.close()
    support.figure(f"50 connections: Echo + Sleep(500) each, done in {elapsed:.2f} s")
    assert echoes == [str(i) for i in range(50)]
    assert len(sleeps) == 50
    assert elapsed < 6.0, f"{elapsed:.2f} s: the calls did not run concurrently (one after another is 25 s)"


def test_many_short_lived_connections(server):
    """200 raw connections opened, used once and closed, 4 at a time."""
    errors = []

    def worker(n):
        for _ in range(n):
            try:
                with support.H2Client(server.port) as c:
                    st = c.wait(c.request("/grpc.health.v1.Health/Check", support.grpc_message(b"")))
                    if st.grpc_status != 0:
                        errors.append(st.describe())
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(repr(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    support.figure(f"200 short-lived connections with one health check each: {elapsed:.2f} s")
    assert not errors, errors[:5]
    support.assert_serving(server)
