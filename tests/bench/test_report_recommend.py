"""The recommendation hook turns measured targets into priced options."""

from __future__ import annotations

from pathlib import Path

from bench.hooks import TargetSummary
from bench.recommend import Workload
from bench.report_predict import PREDICTED_ONLY
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


PREDICTED = [name for name, _, count in PREDICTED_ONLY if count == 1]  # counts: recommend's
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
    assert "**box-a, box-b**: local deployments have no AWS price" in left_out
    # the shapes predicted from INSTANCE are left out too (no validation), named together
    assert f"**{', '.join(PREDICTED)}**: predicted, but" in left_out
    assert list(out.tables["recommendation_rejected.json"]["target"]) == [
        *PREDICTED, "box-a", "box-b"]


def _stand_in() -> TargetSummary:
    # ml.c5.large (2 vCPU) stand-in: 9 ms alone, a plateau of 210 req/s.
    stats = [level(n, 1.3 * 1000 * n / x, x, mean=1000 * n / x)
             for n, x in ((1, 111), (2, 200), (4, 210), (8, 210))]
    return summary("sm-large", "sagemaker", CostDrivers("instance", "ml.c5.large", 1), stats,
                   210.0, provenance="measured-local")


def test_shapes_predicted_from_the_stand_in_are_priced_with_their_band(tmp_path: Path):
    from bench.report_predict import Validation

    validation = Validation("run-1", {"prediction_mape_throughput": 12.0,
                                      "prediction_mape_latency": 10.0,
                                      "prediction_mape_p95": 20.0})
    hook = recommend_hook(Workload(base_rps=900, p95_slo_ms=100), validation=validation)
    out = hook([_stand_in()], 100.0, tmp_path)
    table = out.tables["recommendation.json"]
    predicted = table[table["provenance"] == "predicted"]
    assert set(predicted["option"].str.split("× ").str[1]) == set(PREDICTED)
    assert all(band.startswith(("±", "-")) and band.endswith("%")
               for band in predicted["cost_band"])
    assert (table[table["provenance"] == "measured-local"]["cost_band"] == "").all()
    assert any("predict-check run `run-1`" in n for n in out.note)
    listed = out.parent_tags["recommendation.predicted"]
    assert all(name in listed for name in PREDICTED) and "validated error" in listed


def test_predicted_shapes_without_a_validation_are_left_out_with_the_reason(tmp_path: Path):
    out = recommend_hook(Workload(base_rps=900, p95_slo_ms=100))([_stand_in()], 100.0, tmp_path)
    rejected = out.tables["recommendation_rejected.json"]
    assert set(PREDICTED) <= set(rejected["target"])
    assert rejected["reason"].str.contains("niser-mlops predict-check").any()
    assert "predicted" not in set(out.tables["recommendation.json"]["provenance"])
