"""Cheapest deployment under a p95 SLO, on hand-checkable numbers from the packaged prices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bench import prices
from bench.provenance import Provenance
from bench.recommend import Profile, Workload, recommend
from deployers.base import CostDrivers

# Per-request Lambda cost at 3 GB / 100 ms: 0.3 GB-s x 0.0000166667 + 0.20/1M = 5.20001e-6.
LAMBDA_PER_REQUEST = 0.3 * 0.0000166667 + 0.20e-6


@pytest.fixture(scope="module")
def table() -> prices.PriceTable:
    return prices.load()


def c5(provenance: Provenance = "measured-real", slo_ms: float = 100) -> Profile:
    return Profile(target="sagemaker", provenance=provenance, slo_ms=slo_ms, p95_ms=60,
                   saturation_rps=10.8,  # 648 invocations per minute
                   drivers=CostDrivers(kind="instance", instance_type="ml.c5.xlarge",
                                       instance_count=1))


def lambda3gb(provenance: Provenance = "measured-real", **drivers) -> Profile:
    return Profile(target="lambda", provenance=provenance, slo_ms=100, p95_ms=80,
                   duration_ms=100, init_ms=1000,
                   drivers=CostDrivers(kind="lambda", memory_mb=3072, architecture="x86_64",
                                       **drivers))


def test_steady_load_picks_fully_used_provisioned_lambda_over_instances(table):
    # 30 req/s, p95 <= 100 ms.
    #   3 x ml.c5.xlarge (30 / 10.8 -> 3):               3 x 0.204            = 0.612 $/h
    #   Lambda on demand: 108,000 req/h x 5.20001e-6                         = 0.5616 $/h
    #   Lambda with 3 provisioned (30 x 0.1 s = 3 busy): 0.0216 requests
    #     + 32,400 GB-s x 0.0000097222 + 3 x 3 GB x 3600 s x 0.0000041667     = 0.4716 $/h
    #   hybrid 1 x c5 + Lambda for 19.2 req/s: 0.204 + 69,120 x 5.20001e-6   = 0.5634 $/h
    #   hybrid 2 x c5 + Lambda for 8.4 req/s:  0.408 + 30,240 x 5.20001e-6   = 0.5652 $/h
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100), [c5(), lambda3gb()], table)
    costs = {o.name: o.cost_per_hour.value for o in rec.options}
    assert costs["3 x ml.c5.xlarge"] == pytest.approx(0.612)
    assert costs["lambda 3072 MB x86_64, provisioned 0"] == pytest.approx(
        108_000 * LAMBDA_PER_REQUEST)
    provisioned = 0.0216 + 32_400 * 0.0000097222 + 3 * 3 * 3600 * 0.0000041667
    assert costs["lambda 3072 MB x86_64, provisioned 3"] == pytest.approx(provisioned)
    hybrid1 = "hybrid: 1 x ml.c5.xlarge + lambda 3072 MB for overflow above 10.8 req/s"
    assert costs[hybrid1] == pytest.approx(0.204 + 19.2 * 3600 * LAMBDA_PER_REQUEST)
    assert len(rec.options) == 5
    assert rec.best is not None and rec.best.name == "lambda 3072 MB x86_64, provisioned 3"
    assert rec.best.cost_per_month.value == pytest.approx(provisioned * 730)
    assert rec.best.cost_per_million.value == pytest.approx(provisioned / 108_000 * 1e6)
    assert [o.cost_per_hour.value for o in rec.options] == sorted(costs.values())


def test_bursts_are_served_by_a_hybrid_with_cold_starts_billed(table):
    # Base 5 req/s; 10% of the time 50 req/s more (peak 55 -> 6 instances if instance-only).
    wl = Workload(base_rps=5, burst_rps=50, burst_fraction=0.1, bursts_per_hour=2,
                  p95_slo_ms=100)
    rec = recommend(wl, [c5(), lambda3gb()], table)
    costs = {o.name: o.cost_per_hour.value for o in rec.options}
    assert costs["6 x ml.c5.xlarge"] == pytest.approx(6 * 0.204)
    # 1 x c5 holds the base; Lambda takes 44.2 req/s for 10% of the hour. A burst needs
    # ceil(44.2 x 0.1) = 5 new environments: 5 x 1 s x 3 GB INIT per burst, 2 bursts per hour.
    overflow = 0.1 * 44.2 * 3600 * LAMBDA_PER_REQUEST
    init = 2 * 5 * 1.0 * 3 * 0.0000166667
    name = "hybrid: 1 x ml.c5.xlarge + lambda 3072 MB for overflow above 10.8 req/s"
    assert costs[name] == pytest.approx(0.204 + overflow + init)
    assert wl.mean_rps == pytest.approx(10.0)
    assert rec.best is not None and rec.best.cost_per_hour.value == min(costs.values())


def test_every_figure_is_labelled_and_a_measured_local_input_makes_it_measured_local(table):
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100),
                    [c5(provenance="measured-local"), lambda3gb(provenance="measured-real")], table)
    for option in rec.options:
        figures = [option.cost_per_hour, option.cost_per_month, option.cost_per_million,
                   option.p95_ms]
        assert {f.provenance for f in figures} == {option.provenance}
        assert str(option.cost_per_hour).endswith(f"({option.provenance})")
    by_name = {o.name: o.provenance for o in rec.options}
    assert by_name["3 x ml.c5.xlarge"] == "measured-local"
    assert by_name["lambda 3072 MB x86_64, provisioned 0"] == "measured-real"
    assert all(p == "measured-local" for n, p in by_name.items() if n.startswith("hybrid"))


def test_profiles_that_cannot_show_the_slo_or_be_priced_are_rejected_with_reasons(table):
    local = Profile(target="local", provenance="measured-local", slo_ms=100, p95_ms=20,
                    saturation_rps=50, drivers=CostDrivers(kind="local", cpus=2))
    too_loose = c5(slo_ms=200)
    capped = lambda3gb(max_concurrency=2)  # 30 req/s x 0.1 s needs 3
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100), [local, too_loose, capped], table)
    assert rec.options == [] and rec.best is None
    reasons = dict(rec.rejected)
    assert "local.per_core_hour" in reasons["local (local)"]
    assert "200 ms SLO" in reasons["sagemaker (instance)"]
    assert "max_concurrency=2" in reasons["lambda (lambda)"]
    priced = recommend(Workload(base_rps=30, p95_slo_ms=100), [local],
                       table.with_local(per_core_hour=0.05))
    assert priced.best is not None and priced.best.name == "1 x local"
    assert priced.best.cost_per_hour.value == pytest.approx(2 * 0.05)


def test_without_cold_starts_lambda_keeps_the_peak_provisioned(table):
    wl = Workload(base_rps=5, burst_rps=25, burst_fraction=0.5, p95_slo_ms=100,
                  allow_cold_starts=False)
    rec = recommend(wl, [lambda3gb()], table)
    assert [o.name for o in rec.options] == ["lambda 3072 MB x86_64, provisioned 3"]
    assert rec.options[0].drivers[0].provisioned_concurrency == 3


def test_serverless_is_priced_per_gb_second_of_memory(table):
    sls = Profile(target="sagemaker-serverless", provenance="measured-local", slo_ms=100,
                  p95_ms=90, duration_ms=100,
                  drivers=CostDrivers(kind="serverless", memory_mb=2048, max_concurrency=20))
    rec = recommend(Workload(base_rps=10, p95_slo_ms=100), [sls], table)
    assert rec.best is not None and rec.best.name == "sagemaker serverless 2048 MB"
    # 36,000 req/h x 0.1 s x 2 GB x 0.00002 = 0.144 $/h
    assert rec.best.cost_per_hour.value == pytest.approx(0.144)
    assert rec.best.provenance == "measured-local"


def test_workload_and_profile_refuse_unknown_or_impossible_settings():
    with pytest.raises(ValidationError, match="burst_share"):
        Workload(base_rps=1, p95_slo_ms=100, burst_share=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="burst_fraction"):
        Workload(base_rps=1, p95_slo_ms=100, burst_fraction=1.5)
    with pytest.raises(ValidationError, match="provenance"):
        Profile(target="x", provenance="guessed", slo_ms=1, p95_ms=1,  # type: ignore[arg-type]
                drivers=CostDrivers(kind="instance"))


def test_options_and_rejections_are_named_after_the_measured_targets(table):
    named_c5 = c5().model_copy(update={"name": "sagemaker-c5-xlarge"})
    named_fn = lambda3gb().model_copy(update={"name": "lambda-3gb"})
    loose = c5(slo_ms=200).model_copy(update={"name": "sagemaker-loose"})
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100), [named_c5, named_fn, loose], table)
    short = {o.short_name: o.targets for o in rec.options}
    assert short["3× sagemaker-c5-xlarge"] == ("sagemaker-c5-xlarge",)
    assert short["lambda-3gb"] == ("lambda-3gb",)
    assert short["lambda-3gb, 3 provisioned"] == ("lambda-3gb",)
    assert short["1× sagemaker-c5-xlarge + lambda-3gb overflow"] == (
        "sagemaker-c5-xlarge", "lambda-3gb")
    assert [who for who, _ in rec.rejected] == ["sagemaker-loose"]


def test_a_predicted_instance_carries_its_validated_error_into_the_cost(table):
    # Peak 30 req/s at 10.8 per instance: 3 x ml.c5.xlarge (0.612 $/h). Off by 12 %: 12.1 per
    # instance still needs 3; 9.5 needs 4 (0.816 $/h, +33 %).
    predicted = c5("predicted").model_copy(update={"error_pct": 12.0})
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100), [predicted], table)
    best = rec.best
    assert best is not None and best.provenance == "predicted"
    assert best.cost_per_hour.band_pct == pytest.approx((0.0, 100 / 3))
    assert str(best.cost_per_hour) == "0.612 USD/hour -0/+33 % (predicted)"
    assert best.p95_ms.band_pct == (12.0, 12.0)
    assert " ± 12 % " in str(best.p95_ms)


def test_a_measured_figure_has_no_band(table):
    rec = recommend(Workload(base_rps=30, p95_slo_ms=100), [c5()], table)
    assert rec.best is not None and rec.best.cost_per_hour.band_pct is None
    assert str(rec.best.cost_per_hour) == "0.612 USD/hour (measured-real)"
