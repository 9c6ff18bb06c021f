"""Power tuning's pure part on hand-made profiles: cost, the three picks, the table."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import pytest

from bench import power_tune as pt
from bench import prices
from bench.level_usage import LevelUsage

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def lam() -> prices.LambdaPrices:
    table = prices.load()
    us = table.region("us-east-1").lambda_
    # the hand computations below use these two prices
    assert us.requests_per_million.usd == 0.20
    assert us.duration_gb_second["x86_64"].usd == 0.0000166667
    return us


def size(memory: int, cost: float, duration: float) -> pt.SizeProfile:
    """A profile whose picks depend on ``cost`` (duration line per 1M) and ``duration``."""
    return pt.SizeProfile(
        memory_mb=memory, architecture="x86_64", cpu_configured=memory / 1769,
        cpu_measured=math.nan, init_ms=300.0, cold_starts=3, p50_ms=duration,
        p95_ms=duration * 1.5, mean_ms=duration, cost_per_1m_usd=cost + 0.2,
        duration_cost_per_1m_usd=cost, cold_start_usd=1e-6, provenance="measured-local",
        shaping="none")


def measurement(memory: int = 1024, billed: tuple[float, ...] = (10.0, 20.0, 30.0),
                init: tuple[float, ...] = (250.0, 350.0),
                probe: pt.CpuProbe | None = None) -> pt.SizeMeasurement:
    return pt.SizeMeasurement(
        memory_mb=memory, architecture="x86_64", init_ms=init, billed_ms=billed,
        duration_ms=tuple(b - 0.5 for b in billed), classes=("short",) * len(billed),
        fallback_sessions=0, sessions=len(billed) * 4, probe=probe,
        provenance="measured-local")


def test_1024_mb_billed_10_20_30_ms_costs_0_5333_per_million_with_requests(lam):
    # 1 GB x mean 20 ms = 0.02 GB-s x 0.0000166667 x 1e6 = 0.333334; plus 0.20 of requests.
    total, duration = pt.cost_per_million([10, 20, 30], 1024, lam, "x86_64")
    assert duration == pytest.approx(0.333334)
    assert total == pytest.approx(0.533334)


def test_billed_durations_are_rounded_up_before_pricing(lam):
    _, rounded = pt.cost_per_million([9.2, 19.1, 29.7], 1024, lam, "x86_64")
    _, whole = pt.cost_per_million([10, 20, 30], 1024, lam, "x86_64")
    assert rounded == pytest.approx(whole)


def test_one_cold_start_of_300_ms_at_2048_mb_costs_1_000002e_5_its_init_line_alone(lam):
    # 2 GB x 0.3 s x 0.0000166667 = 1.000002e-5 (no request charge: it is the same request)
    assert pt.cold_start_cost(300.0, 2048, lam, "x86_64") == pytest.approx(1.000002e-5)
    assert math.isnan(pt.cold_start_cost(math.nan, 2048, lam, "x86_64"))


def test_profile_takes_percentiles_of_billed_ms_and_the_mean_init(lam):
    p = pt.profile(measurement(), lam)
    assert (p.p50_ms, p.mean_ms, p.init_ms, p.cold_starts) == (20.0, 20.0, 300.0, 2)
    assert p.p95_ms == pytest.approx(29.0)
    assert p.cpu_configured == pytest.approx(1024 / 1769)
    assert p.cold_start_usd == pytest.approx(pt.cold_start_cost(300.0, 1024, lam, "x86_64"))


def test_without_a_usage_reading_the_cpu_share_is_not_measured(lam):
    p = pt.profile(measurement(probe=None), lam)
    assert math.isnan(p.cpu_measured) and p.shaping == "none"


def test_the_measured_share_is_cpu_seconds_over_wall_seconds(lam):
    usage = LevelUsage("cgroup-v1", wall_s=2.0, used_cpu_s=0.58, quota_cpus=0.289, groups=1,
                       periods=20, throttled_periods=18, throttled_s=1.4, machine_busy=0.5)
    probe = pt.CpuProbe(usage, busy_s=1.9, invocations=10)
    p = pt.profile(measurement(memory=512, probe=probe), lam)
    assert p.cpu_measured == pytest.approx(0.29) and p.shaping == "cgroup-v1"
    assert probe.busy_fraction == pytest.approx(0.95)


def test_a_cold_start_without_init_duration_is_not_counted(lam):
    p = pt.profile(measurement(init=(math.nan, 400.0)), lam)
    assert (p.init_ms, p.cold_starts) == (400.0, 1)
    assert math.isnan(pt.profile(measurement(init=(math.nan,)), lam).init_ms)


def test_a_size_without_warm_invocations_is_refused(lam):
    with pytest.raises(ValueError, match="no warm invocation"):
        pt.profile(measurement(billed=()), lam)


def test_cost_picks_the_cheapest_and_speed_the_fastest():
    picks = pt.pick([size(512, 1.0, 90.0), size(1024, 1.3, 50.0), size(1769, 2.0, 40.0)])
    assert (picks.cost, picks.speed) == (512, 1769)


def test_balanced_differs_from_both_when_a_middle_size_trades_best():
    # max cost 2.0, max duration 100: 512 -> .25 + .5 = .75, 1024 -> .3 + .3 = .6,
    # 1769 -> .5 + .25 = .75: the balanced pick is neither the cheapest nor the fastest.
    profiles = [size(512, 1.0, 100.0), size(1024, 1.2, 60.0), size(1769, 2.0, 50.0)]
    picks = pt.pick(profiles, 0.5)
    assert (picks.cost, picks.speed, picks.balanced) == (512, 1769, 1024)
    assert pt.balanced_value(1.2, 60.0, 2.0, 100.0, 0.5) == pytest.approx(0.6)


def test_balanced_weight_1_is_the_cost_pick_and_0_the_speed_pick():
    profiles = [size(512, 1.0, 100.0), size(1024, 1.2, 60.0), size(1769, 2.0, 50.0)]
    assert pt.pick(profiles, 1.0).balanced == 512
    assert pt.pick(profiles, 0.0).balanced == 1769


def test_ties_go_to_the_faster_the_cheaper_and_the_smaller_size():
    same_cost = [size(1024, 1.0, 80.0), size(512, 1.0, 90.0)]
    assert pt.pick(same_cost).cost == 1024  # same cost: the faster
    same_speed = [size(2048, 2.0, 50.0), size(1769, 1.8, 50.0)]
    assert pt.pick(same_speed).speed == 1769  # same duration: the cheaper
    same_value = [size(1024, 1.0, 100.0), size(512, 1.0, 100.0)]
    assert pt.pick(same_value).balanced == 512  # same value: the smaller size


def test_picks_refuse_nothing_measured_and_a_weight_outside_0_1():
    with pytest.raises(ValueError, match="nothing to pick"):
        pt.pick([])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        pt.pick([size(512, 1.0, 1.0)], 1.5)


def test_table_has_a_row_per_size_by_memory_and_names_the_picks_last(lam):
    profiles = [size(1769, 2.0, 40.0), replace(size(512, 1.0, 90.0), cost_per_1m_usd=1.234567)]
    picks = pt.pick(profiles)
    text = pt.format_table(profiles, picks, "header line", {1024: "DeploymentFailed: boom"})
    lines = text.splitlines()
    assert lines[0] == "header line" and lines[1].split()[:2] == ["memory", "MB"]
    assert [line.split()[0] for line in lines[2:5]] == ["512", "1024", "1769"]
    assert "1.235" in lines[2] and "n/a" in lines[2]  # 4 significant digits; not measured
    assert "failed: DeploymentFailed: boom" in lines[3]
    assert lines[-1] == "picks: cost 512 MB, speed 1769 MB, balanced (weight 0.5) 1769 MB"


def test_summarize_prices_the_measured_sizes_and_keeps_the_failed_ones(lam):
    outcomes = [pt.SizeOutcome(1024, measurement()), pt.SizeOutcome(512, None, "boom")]
    summary = pt.summarize(outcomes, lam, 0.5, "h")
    assert [p.memory_mb for p, _ in summary.measured] == [1024]
    assert summary.failed == {512: "boom"}
    assert summary.picks is not None and summary.picks.cost == 1024
    assert summary.table.splitlines()[-1].startswith("picks: cost 1024 MB")
    nothing = pt.summarize([pt.SizeOutcome(512, None, "boom")], lam, 0.5, "h")
    assert nothing.picks is None and nothing.table.endswith("no memory size was measured)")


def test_no_price_is_written_as_a_literal_in_power_tuning_code():
    table = prices.load()
    lam = [table.region(r).lambda_ for r in table.regions]
    values = {p.usd for x in lam for p in (x.requests_per_million, *x.duration_gb_second.values())}
    for name in ("power_tune.py", "power_tune_measure.py", "power_tune_report.py"):
        tree = ast.parse((BENCH / name).read_text())
        literals = {n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, float)}
        assert not literals & values, f"{name} holds price literals {literals & values}"
