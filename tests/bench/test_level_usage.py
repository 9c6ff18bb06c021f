"""A shaped stand-in's CPU per level: share, throttling, whether the quota bound, and the rule
that the load generator runs outside every shaped group."""

from pathlib import Path

import pytest

from bench.clock import FakeClock
from bench.level_usage import (
    LevelUsage,
    assert_outside_shaped_groups,
    machine_times,
    shaped_groups_of,
)
from bench.sweep import sweep
from bench.targets import limit_levels
from deployers.base import Capacity, Usage
from tests.bench.support import answers_after, payloads, quick


def usage(used: float, periods: int = 0, throttled: int = 0, live: int = 1,
          quota: float | None = 0.5) -> Usage:
    return Usage("cgroup-v1", live, live, quota, periods, throttled, throttled * 0.05, used)


def level(used: float, wall: float = 2.0, periods: int = 20, throttled: int = 0, live: int = 1,
          quota: float | None = 0.5, busy: float = 0.5) -> LevelUsage:
    before = usage(0.0, live=live, quota=quota)
    after = usage(used, periods, throttled, live=live, quota=quota)
    return LevelUsage.between(before, after, wall, (0.0, 0.0), (busy * 100, 100.0))


def test_the_share_is_cpu_used_over_wall_time_and_the_quota_counts_every_live_group():
    lu = level(used=1.0, wall=2.0, live=3)
    assert lu.cpu_share == pytest.approx(0.5)
    assert lu.quota_total == pytest.approx(1.5)
    assert lu.machine_busy == pytest.approx(0.5)


def test_a_throttled_level_meant_to_bind_reports_shaping_bound_1():
    lu = level(used=0.99, wall=2.0, periods=20, throttled=18)
    assert lu.meant_to_bind(8, "closed") and lu.bound
    m = lu.metrics(8, "closed")
    assert m["shaping_bound"] == 1.0 and m["cpu_throttled_periods"] == 18
    assert m["standin_cpu_quota"] == pytest.approx(0.5)


def test_contention_that_kept_the_group_below_its_quota_is_flagged_shaping_bound_0():
    # 8 users on a 0.5-CPU group that got only 0.2 CPU and was never throttled: the machine
    # (100 % busy) was the limit, not the shape
    lu = level(used=0.4, wall=2.0, periods=20, throttled=0, busy=1.0)
    assert lu.meant_to_bind(8, "closed") and not lu.bound and lu.contention_limited(8, "closed")
    assert lu.metrics(8, "closed")["shaping_bound"] == 0.0


def test_a_stand_in_under_its_quota_on_an_idle_machine_is_not_called_contended():
    # meant to bind (8 users, 0.5 CPU) but the machine had CPU to spare: the stand-in asked for
    # no more (a single-threaded server, say); that is not contention and is not flagged
    lu = level(used=0.4, wall=2.0, periods=20, throttled=0, busy=0.6)
    assert lu.meant_to_bind(8, "closed") and not lu.bound and not lu.contended
    assert not lu.contention_limited(8, "closed")
    assert "shaping_bound" not in lu.metrics(8, "closed")


def test_a_quota_that_was_not_meant_to_bind_logs_no_shaping_bound():
    # one request in flight per group with a 2-CPU quota: it can never need the quota
    lu = level(used=0.8, quota=2.0, live=1)
    assert lu.meant_to_bind(1, "closed") is False
    assert "shaping_bound" not in lu.metrics(1, "closed")
    assert lu.meant_to_bind(50.0, "open") is None  # a rate is not judged
    assert "shaping_bound" not in level(used=0.1, quota=None).metrics(4, "closed")


def test_machine_times_reads_busy_and_total_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
    assert machine_times(stat) == (150.0, 1000.0)
    assert machine_times(tmp_path / "absent") == (0.0, 0.0)


def _proc(tmp_path: Path, text: str) -> Path:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(text)
    return tmp_path


def test_a_generator_inside_a_shaped_group_is_refused(tmp_path):
    proc = _proc(tmp_path, "4:memory:/\n1:cpu,cpuacct:/niser-mlops/local-1-abc\n0::/\n")
    assert shaped_groups_of(42, proc) == ["/niser-mlops/local-1-abc"]
    with pytest.raises(RuntimeError, match="inside the shaped cgroup"):
        assert_outside_shaped_groups(42, proc)


def test_a_generator_outside_every_shaped_group_passes(tmp_path):
    proc = _proc(tmp_path, "4:memory:/\n1:cpu,cpuacct:/niser-mlops\n0::/user.slice\n")
    assert shaped_groups_of(42, proc) == []
    assert_outside_shaped_groups(42, proc)
    assert_outside_shaped_groups()  # this test process itself


def test_the_sweep_records_the_stand_ins_usage_around_every_level():
    clock = FakeClock()
    readings = iter([usage(0.0), usage(0.1, 2, 1), usage(0.1, 2, 1), usage(0.3, 5, 4)])
    ticks = iter([(0.0, 10.0), (5.0, 20.0), (5.0, 20.0), (15.0, 30.0)])
    res = sweep(answers_after(clock, 0.005), payloads(), [1, 2], quick(duration_s=0.1),
                clock=clock, observe=lambda: next(readings), machine=lambda: next(ticks))
    first, second = (lv.usage for lv in res.levels)
    assert first is not None and second is not None
    assert first.used_cpu_s == pytest.approx(0.1) and first.throttled_periods == 1
    assert second.used_cpu_s == pytest.approx(0.2) and second.periods == 3
    assert first.machine_busy == pytest.approx(0.5) and second.machine_busy == pytest.approx(1.0)
    assert first.wall_s > 0


def test_a_sweep_of_an_unshaped_target_carries_no_usage():
    clock = FakeClock()
    res = sweep(answers_after(clock, 0.005), payloads(), [1], quick(duration_s=0.1), clock=clock,
                observe=lambda: None)
    assert res.levels[0].usage is None


def test_levels_beyond_the_machines_capacity_are_left_out_with_the_reason():
    cap = Capacity(3, "this machine holds 3 environments of 1024 MB at their full CPU share")
    kept, note = limit_levels([1, 2, 4, 8], cap)
    assert kept == [1, 2, 3]  # up to what the machine holds
    assert note is not None and note.startswith("levels 4, 8 not measured: this machine holds 3")
    assert limit_levels([1, 2], cap) == ([1, 2], None)
    assert limit_levels([8, 16], cap)[0] == [3]
    assert limit_levels([1, 16], None) == ([1, 16], None)
