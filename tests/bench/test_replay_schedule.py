"""Replay schedules: intended send times, hand-checked."""

import numpy as np
import pytest

from bench.replay_schedule import poisson_starts, schedule
from bench.replay_trace import Trace, TraceSession


def timed(*offsets, starts=None):
    """A trace with one session per tuple of click offsets (and start times when given)."""
    return Trace("t", tuple(
        TraceSession(f"s{i}", tuple(range(1, len(o) + 1)), o, None if starts is None else starts[i])
        for i, o in enumerate(offsets)))


def untimed(*lengths):
    return Trace("t", tuple(TraceSession(f"s{i}", tuple(range(1, n + 1)))
                            for i, n in enumerate(lengths)))


def test_poisson_starts_are_zero_then_the_seeded_cumulative_exponential_gaps():
    gaps = np.random.default_rng(3).exponential(0.5, size=3)
    expected = [0.0, gaps[0], gaps[0] + gaps[1], gaps.sum()]
    assert poisson_starts(4, 2.0, 3) == pytest.approx(expected)
    assert poisson_starts(20_000, 4.0, 0)[-1] / 20_000 == pytest.approx(0.25, rel=0.03)


def test_poisson_pace_spaces_clicks_think_s_over_speedup_after_each_session_start():
    plan = schedule(untimed(3, 2), "poisson", rate=2.0, think_s=1.0, speedup=4.0, seed=3)
    second = float(np.random.default_rng(3).exponential(0.5))
    assert plan.clicks_s[0] == (0.0, 0.25, 0.5)
    assert plan.clicks_s[1] == pytest.approx((second, second + 0.25))
    assert (plan.pace, plan.starts) == ("poisson", "poisson")
    assert plan.duration_s == pytest.approx(max(0.5, second + 0.25))


def test_recorded_pace_divides_the_recorded_offsets_by_the_speedup():
    plan = schedule(timed((0.0, 10.0, 30.0), (0.0, 5.0)), "recorded", rate=1.0, speedup=10.0,
                    seed=0)
    start = float(np.random.default_rng(0).exponential(1.0))
    assert plan.clicks_s[0] == (0.0, 1.0, 3.0)
    assert plan.clicks_s[1] == pytest.approx((start, start + 0.5))
    assert plan.starts == "poisson"  # Diginetica-like: click times, no session start times


def test_recorded_pace_takes_session_starts_from_the_log_when_every_session_has_one():
    trace = timed((0.0, 4.0), (0.0, 2.0), (0.0,), starts=[100.0, 160.0, 130.0])
    plan = schedule(trace, "recorded", speedup=2.0)
    assert plan.clicks_s == ((0.0, 2.0), (30.0, 31.0), (15.0,))
    assert plan.starts == "recorded" and plan.starts_s == (0.0, 30.0, 15.0)


@pytest.mark.parametrize(("trace", "kwargs", "message"), [
    (untimed(2), {"pace": "recorded", "rate": 1.0}, "pace 'recorded' needs click times"),
    (untimed(2), {"pace": "poisson"}, "rate \\(sessions/s\\) is required"),
    (timed((0.0, 1.0)), {"pace": "recorded"}, "no session start times"),
    (untimed(2), {"pace": "poisson", "rate": 0.0}, "rate must be > 0"),
    (untimed(2), {"pace": "poisson", "rate": 1.0, "speedup": 0.0}, "speedup must be > 0"),
    (untimed(2), {"pace": "poisson", "rate": 1.0, "think_s": -1.0}, "think_s must be >= 0"),
    (untimed(2), {"pace": "steady", "rate": 1.0}, "pace must be one of recorded, poisson"),
])
def test_bad_settings_are_refused_naming_the_setting(trace, kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedule(trace, **kwargs)
