"""Predicted curves beside the measured ones in a benchmark (the forecast hook)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import perfmodel as pm
from bench.hooks import TargetSummary
from bench.report_predict import PREDICTED_ONLY, Validation, error_band, forecast_hook
from bench.stats import LevelStats
from deployers.base import CostDrivers, Description

MODEL = pm.ServerModel(pm.Scaling(0.010, 0.0), 9.0, 1.0, pm.Tails(((1, 0.95, 1.3), (8, 0.95, 1.5))))


def _stats(levels: list[pm.Level]) -> list[LevelStats]:
    return [LevelStats(float(lv.users), 100, 100, 0, 0, lv.mean_ms, lv.p50_ms, lv.p50_ms,
                       lv.p95_ms, lv.p95_ms * 1.2, lv.p95_ms * 1.5, lv.throughput_rps, 0.0, 5.0)
            for lv in levels]


def _summary(name: str, cost: CostDrivers, levels: list[pm.Level]) -> TargetSummary:
    return TargetSummary(name, "closed", _stats(levels), None, None,
                         Description(cost.kind, name, "InService", cost), "measured-local")


SM_SHAPE = pm.Shape(2.0, workers=2)  # ml.c5.large: a worker per vCPU, as its container runs


def _sagemaker() -> TargetSummary:
    levels = MODEL.predict(SM_SHAPE, [1, 2, 4, 8])
    return _summary("sm", CostDrivers("instance", instance_type="ml.c5.large",
                                      instance_count=1), levels)


def _lambda() -> TargetSummary:
    levels = [pm.Level(1, 12.0, 11.5, 15.0, 83.0), pm.Level(2, 12.5, 12.0, 16.0, 160.0)]
    return _summary("lam", CostDrivers("lambda", memory_mb=1024), levels)


def test_every_target_gets_predicted_step_metrics_and_lambda_stays_flat_to_16_users(
        tmp_path: Path) -> None:
    out = forecast_hook(None)([_sagemaker(), _lambda()], 50.0, tmp_path)
    sm = out.step_metrics["sm"]
    assert [x for x, _ in sm["predicted_latency_mean_ms"]] == [1, 2, 4, 8]
    measured = {lv.users: lv for lv in MODEL.predict(SM_SHAPE, [1, 2, 4, 8])}
    for users, value in sm["predicted_throughput_rps"]:
        assert value == pytest.approx(measured[int(users)].throughput_rps, rel=0.1)
    lam = dict(out.step_metrics["lam"]["predicted_latency_p50_ms"])
    assert max(lam) == 16 and lam[16] == lam[1] == 11.5


def test_shapes_this_machine_cannot_hold_are_predicted_from_the_sagemaker_target(
        tmp_path: Path) -> None:
    out = forecast_hook(None)([_sagemaker()], 50.0, tmp_path)
    table = out.tables["predicted_targets.json"]
    assert set(table["target"]) == {name for name, _, _ in PREDICTED_ONLY}
    assert set(table["provenance"]) == {"predicted"}
    big = table[table["target"] == "predicted-c5-2xlarge"]["throughput_rps"].max()
    # 8 vCPUs with a worker each, no contention: what the model itself gives that shape
    [truth] = MODEL.predict(pm.Shape(8.0, workers=8), [16])
    assert big == pytest.approx(truth.throughput_rps, rel=0.05)
    assert "plots/predicted.png" in out.figures
    assert out.parent_tags["prediction.validation_run"] == "none"


def test_the_validated_errors_go_to_the_parent_run(tmp_path: Path) -> None:
    v = Validation("abc", {"prediction_mape_latency": 11.5, "prediction_mape_p95": 19.5,
                           "prediction_mape_throughput": 3.9, "prediction_scaling_sigma": 0.1})
    out = forecast_hook(v)([_sagemaker()], 50.0, tmp_path)
    assert out.parent_metrics["prediction_mape_latency"] == 11.5
    assert out.parent_tags["prediction.validation_run"] == "abc"
    assert "mean latency 12 %" in error_band(v)
    assert "predict-check" in error_band(None)


def test_the_validation_is_the_latest_check_run_not_one_of_its_shapes(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from bench.report_predict import latest_validation

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert latest_validation(client) is None
    exp = client.create_experiment("predict-check", artifact_location=tmp_path.as_uri())
    parent = client.create_run(exp, run_name="predict-check")
    client.log_metric(parent.info.run_id, "prediction_mape_latency", 12.0)
    client.set_terminated(parent.info.run_id)
    child = client.create_run(exp, run_name="lambda-1769mb",
                              tags={"mlflow.parentRunId": parent.info.run_id})
    client.log_metric(child.info.run_id, "prediction_mape_latency", 31.0)
    client.set_terminated(child.info.run_id)
    found = latest_validation(client)
    assert found is not None and found.run_id == parent.info.run_id
    assert found.metrics == {"prediction_mape_latency": 12.0}


def test_a_negative_contention_is_not_carried_to_bigger_instances(tmp_path: Path) -> None:
    v = Validation("abc", {"prediction_mape_latency": 11.5, "prediction_scaling_sigma": -0.14})
    table = forecast_hook(v)([_sagemaker()], 50.0, tmp_path).tables["predicted_targets.json"]
    big = table[table["target"] == "predicted-c5-2xlarge"]["throughput_rps"].max()
    small = max(lv.throughput_rps for lv in MODEL.predict(pm.Shape(2.0), [16]))
    assert big <= 4 * small * 1.05  # linear at most, never the superlinear -0.14 would give


def test_lambda_at_3008_mb_is_predicted_from_the_measured_size_with_the_checked_law(
        tmp_path: Path) -> None:
    from bench.power_tune import configured_cpu

    s = _lambda()
    lam = TargetSummary(s.name, s.mode, s.stats, None, None, s.description, s.provenance,
                        {"lambda_duration_ms_mean": 8.0})
    law = {"prediction_lambda_a_ms": 2.0, "prediction_lambda_b_ms": 3.0,
           "prediction_lambda_share_lo": 0.289, "prediction_lambda_share_hi": 0.579}
    out = forecast_hook(Validation("run-1", law))([lam], 50.0, tmp_path)
    rows = out.tables["predicted_targets.json"]
    big = rows[rows["target"] == "predicted-lambda-3008mb"]
    # 4 ms of invoke overhead kept, 8 ms of duration scaled by the law's ratio
    expected = 4.0 + 8.0 * (2 + 3 / configured_cpu(3008)) / (2 + 3 / configured_cpu(1024))
    assert list(big["users"]) == [1, 2, 4, 6, 8, 11, 16]
    assert set(big["p50_ms"].round(6)) == {round(11.5 * expected / 12.0, 6)}
    assert any("predicted-lambda-3008mb" in n and "extrapolated" in n for n in out.note)
    assert "predicted-lambda-3008mb" not in forecast_hook(None)([lam], 50.0, tmp_path).tables.get(
        "predicted_targets.json", {"target": []})["target"]
