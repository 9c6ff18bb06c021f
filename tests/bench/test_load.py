import logging
import threading
import time

import numpy as np
import pytest

from bench.calibrate import HttpInvoker, StubServer
from bench.load import (
    LoadSettings,
    OpenLoopSettings,
    arrival_offsets_ns,
    closed_loop,
    cold_start,
    open_loop,
    sweep,
)
from bench.payloads import Payloads
from bench.stats import ERROR, OK, TIMEOUT
from deployers.base import InvocationError, Prediction

DELAY = 0.005


def sleeper(delay=DELAY):
    def invoke(sessions, k=20):
        time.sleep(delay)
        return Prediction([[1]] * len(sessions), [[1.0]] * len(sessions))
    return invoke


@pytest.fixture
def payloads():
    return Payloads([[i, i + 1] for i in range(1, 200)], seed=0)


def quick(**kw):
    base = dict(warmup_s=0.05, duration_s=0.3, timeout_s=1.0)
    base.update(kw)
    return LoadSettings(**base)


def test_closed_loop_counts_and_latencies_at_least_the_delay(payloads):
    res = closed_loop(sleeper(), payloads, 4, quick())
    st = res.stats()
    assert st.count > 50 and st.ok == st.count and st.errors == 0
    in_window = (res.intended_ns >= res.t0_ns) & (res.intended_ns < res.t1_ns)
    assert in_window.sum() == st.count
    assert res.latency_ms.min() >= DELAY * 1e3
    assert res.warmup.any() and not res.warmup[in_window].any()  # warm-up kept, flagged
    # 4 users at ~5 ms each: at most 800 req/s, and well above one user's 200
    assert 300 < st.throughput_rps <= 800
    assert res.threads == 4 and res.abandoned == 0


def test_closed_loop_window_bounded_by_request_count(payloads):
    t = time.monotonic()
    res = closed_loop(sleeper(), payloads, 2, quick(duration_s=30, max_requests=20))
    assert res.stats().count == 20
    assert time.monotonic() - t < 2


def test_errors_are_counted_not_dropped(payloads):
    calls = iter(range(10**6))

    def flaky(sessions, k=20):
        if next(calls) % 2:
            raise InvocationError("boom", status=503)
        time.sleep(0.002)
        return Prediction([[1]], [[1.0]])

    res = closed_loop(flaky, payloads, 2, quick())
    st = res.stats()
    assert st.errors > 10 and st.ok > 10 and st.count == st.ok + st.errors
    assert 0.3 < st.error_rate < 0.7
    assert set(res.error[res.status == ERROR]) == {"InvocationError(503)"}


def test_slow_requests_count_as_timeouts(payloads):
    res = closed_loop(sleeper(0.08), payloads, 2, quick(timeout_s=0.05, duration_s=0.2))
    st = res.stats()
    assert st.timeouts == st.count > 0 and st.ok == 0


def test_hung_target_ends_within_timeout_and_records_in_flight(payloads):
    release = threading.Event()

    def hang(sessions, k=20):
        release.wait(10)
        return Prediction([[1]], [[1.0]])

    t = time.monotonic()
    try:
        res = closed_loop(hang, payloads, 3, quick(duration_s=0.2, timeout_s=0.2))
    finally:
        release.set()
    assert time.monotonic() - t < 0.05 + 0.2 + 0.2 + 0.2 + 0.5
    assert res.abandoned == 3
    assert (res.status == TIMEOUT).sum() == 3
    assert set(res.error) == {"AbandonedInFlight"}


def test_open_loop_sends_on_schedule(payloads):
    s = OpenLoopSettings(warmup_s=0.05, duration_s=0.4, timeout_s=1.0)
    res = open_loop(sleeper(), payloads, 100, s)
    st = res.stats()
    assert st.count == 40 and st.ok == 40  # 100/s for 0.4 s
    assert len(res.status) == 45  # 5 warm-up requests kept
    assert res.latency_ms.min() >= DELAY * 1e3
    assert st.throughput_rps == pytest.approx(100, rel=0.1)
    assert res.late_starts < st.count // 2  # the generator kept up with the schedule


def test_open_loop_measures_from_intended_send_time(payloads):
    """One stalled request must inflate the latency of the requests queued behind it."""
    calls = iter(range(10**6))

    def stall_once(sessions, k=20):
        time.sleep(0.25 if next(calls) == 5 else 0.002)
        return Prediction([[1]], [[1.0]])

    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.5, timeout_s=2.0, max_workers=1)
    res = open_loop(stall_once, payloads, 100, s)
    # Requests 6.. were due every 10 ms during the 250 ms stall: each waited, and that counts.
    slow = res.latency_ms[res.status == OK] > 50
    assert slow.sum() >= 15
    assert res.late_starts >= 15
    # The service time (end - actual start) of those requests stayed short: only the
    # intended-time latency reveals the queueing.
    service_ms = (res.end_ns - res.start_ns) / 1e6
    assert (service_ms > 50).sum() == 1


def test_open_loop_adds_workers_so_a_stall_does_not_block_others(payloads):
    calls = iter(range(10**6))

    def stall_once(sessions, k=20):
        time.sleep(0.25 if next(calls) == 5 else 0.002)
        return Prediction([[1]], [[1.0]])

    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.5, timeout_s=2.0)
    res = open_loop(stall_once, payloads, 100, s)
    assert (res.latency_ms > 50).sum() == 1
    assert res.threads >= 2


def test_poisson_schedule_is_seeded_with_the_right_mean():
    a = arrival_offsets_ns(200, 10, "poisson", 1, 10**6)
    b = arrival_offsets_ns(200, 10, "poisson", 1, 10**6)
    assert np.array_equal(a, b)
    assert len(a) == pytest.approx(2000, rel=0.1)
    assert np.diff(a).mean() / 1e9 == pytest.approx(1 / 200, rel=0.1)
    assert a.max() < 10e9
    c = arrival_offsets_ns(50, 1, "constant", 0, 10**6)
    assert len(c) == 50 and np.all(np.diff(c) == 20_000_000)
    assert len(arrival_offsets_ns(50, 10, "constant", 0, 7)) == 7
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets_ns(0, 1, "constant", 0, 1)


def test_sweep_runs_levels_in_order(payloads):
    res = sweep(sleeper(), payloads, [1, 2, 4], quick(duration_s=0.15))
    assert [lv.level for lv in res.levels] == [1, 2, 4]
    thr = [s.throughput_rps for s in res.stats()]
    assert thr[0] < thr[1] < thr[2]
    assert res.stopped_reason is None
    assert len(res.frame()) == sum(len(lv.status) for lv in res.levels)


def test_sweep_against_killed_server_ends_within_budget_with_failures_counted(payloads):
    with StubServer(delay_ms=5) as server:
        inv = HttpInvoker(server.url, timeout_s=0.5)
        threading.Timer(0.5, server.kill).start()  # dies during the second level
        t = time.monotonic()
        res = sweep(inv, payloads, [1, 2, 4, 8], quick(duration_s=0.3, timeout_s=0.5),
                    budget_s=6.0)
        elapsed = time.monotonic() - t
    assert elapsed < 6.0
    stats = res.stats()
    assert stats[0].ok > 10  # the first level was measured before the kill
    assert sum(s.errors + s.timeouts for s in stats) > 0  # failures counted, not dropped
    assert res.stopped_reason is not None and "failed" in res.stopped_reason
    assert len(res.levels) < 4


def test_sweep_respects_a_tight_budget(payloads):
    t = time.monotonic()
    res = sweep(sleeper(), payloads, [1, 2, 4, 8], quick(duration_s=1.0, timeout_s=0.2),
                budget_s=1.5)
    assert time.monotonic() - t < 1.5 + 0.3
    assert res.stopped_reason and "budget" in res.stopped_reason


def test_cpu_saturation_is_flagged_and_logged(payloads, caplog):
    def spin(sessions, k=20):
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        return Prediction([[1]], [[1.0]])

    with caplog.at_level(logging.WARNING, logger="bench.load"):
        busy = closed_loop(spin, payloads, 2, quick(duration_s=0.2, cpu_warn_fraction=0.05))
    idle = closed_loop(sleeper(), payloads, 2, quick(duration_s=0.2, cpu_warn_fraction=0.05))
    assert busy.cpu_saturated and busy.cpu_fraction > 5 * idle.cpu_fraction
    assert not idle.cpu_saturated
    assert "load generator process used" in caplog.text


def test_cold_start_polls_until_first_success():
    up_at = time.perf_counter() + 0.15

    def booting(sessions, k=20):
        if time.perf_counter() < up_at:
            raise InvocationError("not ready", status=503)
        return Prediction([[1]], [[1.0]])

    since = time.perf_counter_ns()
    cs = cold_start(booting, [[1]], since_ns=since, timeout_s=2, poll_s=0.01)
    assert cs.seconds is not None and 0.15 <= cs.seconds < 0.5 and cs.attempts > 2

    def never(sessions, k=20):
        raise InvocationError("down")

    t = time.monotonic()
    cs = cold_start(never, [[1]], timeout_s=0.2, poll_s=0.02)
    assert cs.seconds is None and "down" in cs.last_error and time.monotonic() - t < 0.5
