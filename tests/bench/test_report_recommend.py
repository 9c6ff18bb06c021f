"""The recommendation hook turns measured targets into priced options."""

from __future__ import annotations

from pathlib import Path

from bench.hooks import TargetSummary
from bench.recommend import Workload
from bench.report_recommend import profile, recommend_hook
from bench.stats import LevelStats
from deployers.base import CostDrivers, Description


def level(users: int, p95: float, rps: float, mean: float = 5.0) -> LevelStats:
    return LevelStats(level=users, count=100, ok=100, errors=0, timeouts=0, mean_ms=mean,
                      p50_ms=mean, p90_ms=p95, p95_ms=p95, p99_ms=p95, max_ms=p95,
                      throughput_rps=rps, error_rate=0.0, window_s=1.0)


def summary(name: str, target: str, cost: CostDrivers, stats: list[LevelStats],
            saturation: float | None, cold: float | None = None,
            provenance: str = "measured-real") -> TargetSummary:
    return TargetSummary(name, "closed", stats, saturation, cold,
                         Description(target, name, "InService", cost), provenance)  # type: ignore[arg-type]


INSTANCE = summary("sm", "sagemaker", CostDrivers("instance", "ml.c5.xlarge", 1),
                   [level(1, 10, 100), level(4, 40, 200), level(8, 90, 210)], 200.0)
LAMBDA = summary("fn", "lambda", CostDrivers("lambda", memory_mb=2048, architecture="x86_64"),
                 [level(1, 12, 90, mean=10.0), level(8, 14, 700)], 700.0, cold=0.6,
                 provenance="measured-local")


def test_profile_uses_saturation_level_and_lambda_duration():
    p = profile(INSTANCE, 50.0)
    assert p is not None and p.saturation_rps == 200.0 and p.p95_ms == 40
    assert p.provenance == "measured-real" and p.duration_ms is None
    lam = profile(LAMBDA, 50.0)
    assert lam is not None and lam.duration_ms == 10.0 and lam.init_ms == 600.0
    assert lam.provenance == "measured-local"  # a local stand-in for Lambda


def test_hook_logs_options_cheapest_first_and_a_parent_tag(tmp_path: Path):
    out = recommend_hook(Workload(base_rps=50, p95_slo_ms=50))([INSTANCE, LAMBDA], 50.0, tmp_path)
    table = out.tables["recommendation.json"]
    assert len(table) >= 2
    assert list(table["cost_per_hour_usd"]) == sorted(table["cost_per_hour_usd"])
    best = table.iloc[0]
    assert out.parent_metrics["recommended_cost_per_hour_usd"] == best["cost_per_hour_usd"]
    assert best["option"] in out.parent_tags["recommendation"]
    # every option resting on the local Lambda stand-in is labelled measured-local
    assert set(table[table["option"].str.contains("fn")]["provenance"]) == {"measured-local"}


def test_hook_says_so_when_nothing_meets_the_slo(tmp_path: Path):
    out = recommend_hook(Workload(base_rps=50, p95_slo_ms=5))([INSTANCE], 5.0, tmp_path)
    assert out.tables["recommendation.json"].empty
    assert out.parent_tags["recommendation"].startswith("none: no measured target")
    assert "recommendation.provenance" not in out.parent_tags
    assert not out.tables["recommendation_rejected.json"].empty


def test_lambda_profile_prefers_the_reported_billed_duration():
    reported = TargetSummary(LAMBDA.name, "closed", LAMBDA.stats, LAMBDA.saturation_rps,
                             LAMBDA.cold_start_s, LAMBDA.description, LAMBDA.provenance,
                             {"lambda_billed_ms_mean": 3.0})
    p = profile(reported, 50.0)
    assert p is not None and p.duration_ms == 3.0


def test_targets_left_out_for_the_same_reason_are_named_together(tmp_path: Path):
    boxes = [summary(name, "local", CostDrivers("local", cpus=2), [level(1, 10, 100)], 100.0)
             for name in ("box-a", "box-b")]
    out = recommend_hook(Workload(base_rps=50, p95_slo_ms=50))([*boxes, INSTANCE], 50.0, tmp_path)
    left_out = out.note[-1].split("Left out: ", 1)[1]
    assert left_out.startswith("**box-a, box-b**: local deployments have no AWS price")
    assert list(out.tables["recommendation_rejected.json"]["target"]) == ["box-a", "box-b"]
