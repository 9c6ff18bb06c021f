"""What a benchmark spent (``bench.spend``) and what a leftover costs per month
(``bench.leftover_cost``), on hand-computed figures from the packaged price table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import prices
from bench.hooks import TargetSummary
from bench.leftover_cost import monthly
from bench.spend import spend, spend_hook
from bench.stats import LevelStats
from deployers.base import CostDrivers, Description
from deployers.leftovers import Leftover

TABLE = prices.load()
REGION = TABLE.region()


def _summary(cost: CostDrivers, metrics: dict[str, float], provenance: str = "measured-local"
             ) -> TargetSummary:
    level = LevelStats(level=1, count=10, ok=10, errors=0, timeouts=0, mean_ms=8.0, p50_ms=8.0,
                       p90_ms=9.0, p95_ms=9.5, p99_ms=10.0, max_ms=12.0, throughput_rps=120.0,
                       error_rate=0.0, window_s=1.0)
    return TargetSummary("t", "closed", [level], 120.0, None,
                         Description(cost.kind, "t", "ok", cost), provenance,  # type: ignore[arg-type]
                         metrics)


def test_an_instance_endpoint_spends_its_hourly_price_for_the_seconds_it_existed() -> None:
    s = _summary(CostDrivers("instance", "ml.c5.large", 2), {"held_s": 900.0})
    got = spend(s, TABLE)
    assert got.usd == pytest.approx(2 * TABLE.instance_hourly("ml.c5.large").usd / 4)
    assert got.basis.startswith("would be, on AWS (stand-in, nothing billed)")


def test_a_real_endpoint_is_a_billed_estimate() -> None:
    s = _summary(CostDrivers("instance", "ml.c5.large", 1), {"held_s": 3600.0}, "measured-real")
    assert spend(s, TABLE).basis.startswith("billed estimate")


def test_lambda_spends_requests_plus_billed_gb_seconds_plus_init() -> None:
    s = _summary(CostDrivers("lambda", memory_mb=2048),
                 {"held_s": 60.0, "requests_sent": 1000.0, "lambda_reports": 1000.0,
                  "lambda_billed_ms_mean": 10.0, "lambda_cold_starts": 2.0,
                  "lambda_init_ms_mean": 500.0})
    gb_s = 1000 * 0.010 * 2 + 2 * 0.5 * 2
    want = 1000 / 1e6 * REGION.lambda_.requests_per_million.usd + gb_s * (
        REGION.lambda_.duration_gb_second["x86_64"].usd)
    assert spend(s, TABLE).usd == pytest.approx(want)


def test_local_targets_without_a_local_price_spend_zero_and_say_why() -> None:
    s = _summary(CostDrivers("local", cpus=1.0), {"held_s": 60.0})
    got = spend(s, TABLE)
    assert got.usd == 0 and "no local price" in got.basis
    priced = spend(s, TABLE.with_local(per_core_hour=0.36))
    assert priced.usd == pytest.approx(0.36 / 60)


def test_the_hook_logs_each_target_and_the_total(tmp_path: Path) -> None:
    a = _summary(CostDrivers("instance", "ml.c5.large", 1), {"held_s": 3600.0})
    out = spend_hook(TABLE)([a], 50.0, tmp_path)
    hourly = TABLE.instance_hourly("ml.c5.large").usd
    assert out.summary_metrics["t"]["experiment_cost_usd"] == pytest.approx(hourly)
    assert out.parent_metrics["experiment_cost_usd"] == pytest.approx(hourly)
    assert "stand-in, nothing billed" in out.parent_tags["experiment_cost"]
    assert list(out.tables["experiment_cost.json"].columns) == ["target", "usd", "basis"]


def test_provisioned_concurrency_left_costs_its_gb_seconds_of_a_730_hour_month() -> None:
    row = Leftover("lambda-provisioned-concurrency", "fn:live", "aws", "fn",
                   cost=CostDrivers("lambda", memory_mb=1024, provisioned_concurrency=2))
    rate = REGION.lambda_.provisioned_concurrency_gb_second["x86_64"].usd
    assert monthly(row, TABLE).usd == pytest.approx(2 * 1.0 * 730 * 3600 * rate)


def test_stored_objects_cost_their_gb_months_and_idle_things_nothing() -> None:
    s3 = Leftover("s3-prefix", "s3://b/niser-mlops/x/", "aws", "x", size_bytes=2 * 10**9)
    assert monthly(s3, TABLE).usd == pytest.approx(2 * REGION.s3_storage_gb_month.usd)  # type: ignore[union-attr]
    assert monthly(Leftover("iam-role", "r", "aws"), TABLE).usd == 0
    assert monthly(Leftover("sagemaker-model", "m", "moto"), TABLE).basis == "nothing while idle"
