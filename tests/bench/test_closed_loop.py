"""Closed loop, on the fake clock: every figure below is exact."""

import logging

import pytest

from bench.clock import FakeClock
from bench.closed_loop import closed_loop
from bench.level import cores
from bench.stats import ERROR, TIMEOUT
from deployers.base import InvocationError, Prediction
from tests.bench.support import answers_after, payloads, quick, sleeper


def test_four_users_at_5ms_send_40_warmup_and_240_window_requests():
    clock = FakeClock()
    res = closed_loop(answers_after(clock, 0.005), payloads(), 4, quick(), clock)
    st = res.stats()
    # 50 ms warm-up / 5 ms x 4 users = 40; 300 ms window / 5 ms x 4 users = 240
    assert res.warmup.sum() == 40 and st.count == st.ok == 240 and st.errors == 0
    in_window = (res.intended_ns >= res.t0_ns) & (res.intended_ns < res.t1_ns)
    assert in_window.sum() == st.count and not res.warmup[in_window].any()
    assert set(res.latency_ms) == {5.0}
    assert (res.t0_ns, res.t1_ns) == (50_000_000, 350_000_000)
    assert res.threads == 4 and res.abandoned == 0


def test_window_ends_after_max_requests_not_after_duration():
    clock = FakeClock()
    res = closed_loop(answers_after(clock, 0.005), payloads(), 2,
                      quick(duration_s=30, max_requests=20), clock)
    assert res.stats().count == 20
    assert clock.now_ns() == 100_000_000  # 50 ms warm-up + 10 rounds of 5 ms, not 30 s


def test_every_failed_request_is_counted_with_its_error_class():
    clock = FakeClock()
    calls = iter(range(10**6))

    def flaky(sessions, k=20):
        clock.sleep(0.002)
        if next(calls) % 2:
            raise InvocationError("boom", status=503)
        return Prediction([[1]], [[1.0]])

    res = closed_loop(flaky, payloads(), 1, quick(warmup_s=0.0), clock)
    st = res.stats()
    assert (st.count, st.ok, st.errors) == (150, 75, 75)  # 300 ms / 2 ms, every other one fails
    assert set(res.error[res.status == ERROR]) == {"InvocationError(503)"}


def test_requests_slower_than_the_timeout_are_timeouts():
    clock = FakeClock()
    res = closed_loop(answers_after(clock, 0.08), payloads(), 2,
                      quick(timeout_s=0.05, duration_s=0.2), clock)
    st = res.stats()
    assert st.timeouts == st.count > 0 and st.ok == 0
    assert set(res.error[~res.warmup]) == {"SlowerThanTimeout"}


def test_a_hung_target_ends_the_level_at_window_plus_timeout_plus_grace():
    clock = FakeClock()
    res = closed_loop(answers_after(clock, 100.0), payloads(), 3,
                      quick(duration_s=0.2, timeout_s=0.2), clock)
    # 50 ms warm-up + 200 ms window + 200 ms timeout + 200 ms grace
    assert clock.now_ns() == 650_000_000
    assert res.abandoned == 3 and (res.status == TIMEOUT).sum() == 3
    assert set(res.error) == {"AbandonedInFlight"}
    clock.advance(100.0)  # let the hung users return and stop


def test_cpu_use_above_the_threshold_is_flagged_and_logged(caplog):
    clock = FakeClock()

    def spin(sessions, k=20):  # a busy client: CPU time equal to the wall time it takes
        clock.spend_cpu(0.003)
        clock.sleep(0.003)
        return Prediction([[1]], [[1.0]])

    settings = quick(duration_s=0.2, cpu_warn_fraction=0.5 / cores())
    with caplog.at_level(logging.WARNING, logger="bench.level"):
        busy = closed_loop(spin, payloads(), 2, settings, clock)
    assert busy.cpu_saturated and abs(busy.cpu_fraction - 2 / cores()) < 1e-9
    assert "load generator process used" in caplog.text
    idle_clock = FakeClock()
    idle = closed_loop(answers_after(idle_clock, 0.003), payloads(), 2, settings, idle_clock)
    assert not idle.cpu_saturated and idle.cpu_fraction == 0.0


def test_on_the_real_clock_every_request_is_recorded():
    res = closed_loop(sleeper(0.002), payloads(), 2, quick(duration_s=0.1))
    st = res.stats()
    assert st.count > 0 and st.ok == st.count
    assert len(res.status) == len(res.frame()) and res.abandoned == 0


def test_users_below_one_are_refused():
    with pytest.raises(ValueError, match="users must be >= 1"):
        closed_loop(sleeper(0.0), payloads(), 0)



def test_a_stop_set_mid_window_ends_the_level_once_the_requests_in_flight_return():
    import threading

    clock, stop = FakeClock(), threading.Event()
    answer = answers_after(clock, 0.005)

    def stops_at_100ms(sessions, k=20):
        if clock.now_ns() >= 100_000_000:
            stop.set()  # as the flow's cancel does, from another thread
        return answer(sessions, k)

    res = closed_loop(stops_at_100ms, payloads(), 2, quick(duration_s=30), clock, stop)
    # 50 ms warm-up, then the window ends at the stop (100 ms): 10 rounds of 2 users in it
    assert res.t1_ns == 100_000_000 and res.stats().count == 20 and res.abandoned == 0
    assert clock.now_ns() < 1_000_000_000  # not the 30 s window
