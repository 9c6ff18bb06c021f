"""Sweeps on the fake clock: levels in order, within the budget, stopping on a dead target."""

import pytest

from bench.clock import FakeClock
from bench.load_settings import LoadSettings, OpenLoopSettings
from bench.sweep import rate_sweep, sweep
from deployers.base import InvocationError, Prediction
from tests.bench.support import answers_after, payloads, quick


def test_levels_run_in_order_and_throughput_grows_with_users():
    clock = FakeClock()
    res = sweep(answers_after(clock, 0.005), payloads(), [1, 2, 4], quick(duration_s=0.15),
                clock=clock)
    assert [lv.level for lv in res.levels] == [1, 2, 4]
    thr = [s.throughput_rps for s in res.stats()]
    assert thr == pytest.approx([200, 400, 800], rel=0.05)  # 5 ms per request per user
    assert res.stopped_reason is None
    assert len(res.frame()) == sum(len(lv.status) for lv in res.levels)


def test_a_target_that_dies_midway_stops_the_sweep_with_its_failures_counted():
    clock = FakeClock()

    def dies_at_half_a_second(sessions, k=20):
        clock.sleep(0.005)
        if clock.now_ns() > 500_000_000:
            raise InvocationError("connection refused")
        return Prediction([[1]], [[1.0]])

    res = sweep(dies_at_half_a_second, payloads(), [1, 2, 4, 8],
                quick(duration_s=0.3, timeout_s=0.5), budget_s=6.0, clock=clock)
    stats = res.stats()
    # level 1: 350 ms, all before the death; level 2 (window 400-700 ms) dies at 500 ms
    assert (stats[0].ok, stats[0].errors) == (60, 0)
    assert (stats[1].ok, stats[1].errors) == (40, 80)  # failures counted, not dropped
    assert (stats[2].ok, stats[2].errors) == (0, 240)
    assert len(res.levels) == 3
    assert res.stopped_reason is not None and "every request at level 4.0 failed" in (
        res.stopped_reason)


def test_a_tight_budget_stops_the_sweep_before_the_next_level():
    clock = FakeClock()
    res = sweep(answers_after(clock, 0.005), payloads(), [1, 2, 4, 8],
                quick(duration_s=1.0, timeout_s=0.2), budget_s=1.5, clock=clock)
    assert len(res.levels) == 1 and res.elapsed_s <= 1.5
    assert res.stopped_reason == "time budget of 1.5 s spent before level 2.0"


def test_a_hung_target_cannot_overrun_the_budget():
    clock = FakeClock()
    res = sweep(answers_after(clock, 1000.0), payloads(), [1, 2], quick(timeout_s=0.5),
                budget_s=2.0, clock=clock)
    assert res.elapsed_s <= 2.0
    assert res.levels[0].abandoned == 1
    clock.advance(1000.0)


def test_the_default_budget_is_each_levels_warmup_window_timeout_and_a_second():
    s = LoadSettings(warmup_s=1.0, duration_s=3.0, timeout_s=10.0)
    assert s.sweep_budget_s([1, 2, 4]) == 3 * (1.0 + 3.0 + 10.0 + 1.0)


def test_rate_sweep_runs_the_open_loop_at_each_rate():
    clock = FakeClock()
    s = OpenLoopSettings(warmup_s=0.0, duration_s=0.2, timeout_s=0.5)
    res = rate_sweep(answers_after(clock, 0.002), payloads(), [50, 100], s, clock=clock)
    assert res.mode == "open" and [st.count for st in res.stats()] == [10, 20]


def test_an_empty_level_list_is_refused():
    with pytest.raises(ValueError, match="levels is empty"):
        sweep(answers_after(FakeClock(), 0.0), payloads(), [])
