"""Open loop, on the fake clock: requests leave on schedule, latency counts from the schedule."""

import numpy as np
import pytest

from bench.clock import FakeClock
from bench.load_settings import OpenLoopSettings
from bench.open_loop import arrival_offsets_ns, open_loop
from bench.stats import OK
from deployers.base import Prediction
from tests.bench.support import answers_after, payloads, sleeper


def stall_once(clock: FakeClock, which: int = 5, stall_s: float = 0.25, usual_s: float = 0.002):
    """An invoker whose ``which``-th call takes ``stall_s``, every other one ``usual_s``."""
    calls = iter(range(10**6))

    def invoke(sessions, k=20):
        clock.sleep(stall_s if next(calls) == which else usual_s)
        return Prediction([[1]], [[1.0]])
    return invoke


def test_100_per_second_for_400ms_sends_40_window_and_5_warmup_requests_on_time():
    clock = FakeClock()
    s = OpenLoopSettings(warmup_s=0.05, duration_s=0.4, timeout_s=1.0)
    res = open_loop(answers_after(clock, 0.005), payloads(), 100, s, clock)
    st = res.stats()
    assert (st.count, st.ok, len(res.status)) == (40, 40, 45)
    assert set(res.latency_ms) == {5.0}
    assert st.throughput_rps == pytest.approx(100)
    assert res.late_starts == 0 and (res.start_ns == res.intended_ns).all()


def test_one_stalled_request_inflates_the_latency_of_those_queued_behind_it():
    clock = FakeClock()
    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.5, timeout_s=2.0, max_workers=1)
    res = open_loop(stall_once(clock), payloads(), 100, s, clock)
    # Request 5 (due at 50 ms) holds the only worker until 300 ms; request j (due at 10j ms)
    # then starts at 300 + 2 (j - 6) ms and ends 2 ms later: latency 290 - 8j ms, above 50 ms
    # for j = 6..29 (with request 5 itself, 25 slow requests), and a start more than 1 ms late
    # (288 - 8j > 1) for j = 6..35: 30 late starts.
    slow = res.latency_ms[res.status == OK] > 50
    assert slow.sum() == 25
    assert res.late_starts == 30
    # Their service time (end - actual start) stayed 2 ms: only the intended-time latency shows
    # the queueing.
    service_ms = (res.end_ns - res.start_ns) / 1e6
    assert (service_ms > 50).sum() == 1


def test_a_second_worker_keeps_a_stall_from_blocking_the_others():
    clock = FakeClock()
    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.5, timeout_s=2.0)
    res = open_loop(stall_once(clock), payloads(), 100, s, clock)
    assert (res.latency_ms > 50).sum() == 1
    assert res.threads == 2 and res.late_starts == 0


def test_requests_due_while_every_worker_is_stuck_are_timeouts_when_the_level_ends():
    clock = FakeClock()
    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.1, timeout_s=0.2, max_workers=1)
    res = open_loop(answers_after(clock, 100.0), payloads(), 100, s, clock)
    # 10 requests due in 100 ms: the first hangs, the other 9 never start
    assert clock.now_ns() == 20_000_000 + 90_000_000 + 200_000_000 + 200_000_000
    assert sorted(res.error) == ["AbandonedInFlight"] + ["NeverStarted"] * 9
    assert res.abandoned == 1
    clock.advance(100.0)


def test_on_the_real_clock_every_scheduled_request_is_recorded():
    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.2, timeout_s=1.0)
    res = open_loop(sleeper(0.002), payloads(), 50, s)
    assert len(res.status) == 10 and (res.status == OK).all()


def test_poisson_schedule_is_seeded_with_the_right_mean():
    a = arrival_offsets_ns(200, 10, "poisson", 1, 10**6)
    b = arrival_offsets_ns(200, 10, "poisson", 1, 10**6)
    assert np.array_equal(a, b)
    assert len(a) == pytest.approx(2000, rel=0.1)
    assert np.diff(a).mean() / 1e9 == pytest.approx(1 / 200, rel=0.1)
    assert a.max() < 10e9


def test_constant_schedule_is_evenly_spaced_and_capped():
    c = arrival_offsets_ns(50, 1, "constant", 0, 10**6)
    assert len(c) == 50 and np.all(np.diff(c) == 20_000_000)
    assert len(arrival_offsets_ns(50, 10, "constant", 0, 7)) == 7


def test_a_rate_of_zero_is_refused():
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets_ns(0, 1, "constant", 0, 1)
