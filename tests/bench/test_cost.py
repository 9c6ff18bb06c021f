"""Cost functions on fixed, hand-checkable numbers."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from bench import cost, prices
from deployers.base import CostDrivers

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def table() -> prices.PriceTable:
    return prices.load()


@pytest.fixture(scope="module")
def lam(table: prices.PriceTable) -> prices.LambdaPrices:
    return table.region("us-east-1").lambda_


def test_lambda_3gb_100ms_costs_5_20_per_million_including_requests(lam):
    # 3 GB x 0.1 s x 1e6 x 0.0000166667 = 5.00001, plus $0.20 per 1M requests.
    bill = cost.lambda_bill(requests=1_000_000, duration_ms=100, memory_mb=3072, prices=lam)
    assert bill.requests_usd == pytest.approx(0.20)
    assert bill.duration_usd == pytest.approx(5.00001)
    assert bill.per_million_usd == pytest.approx(5.20, abs=1e-4)
    assert bill.init_usd == bill.provisioned_usd == bill.provisioned_duration_usd == 0.0


def test_c5_xlarge_at_648_invocations_per_minute_costs_5_2469e_6_per_inference(table):
    hourly = table.instance_hourly("ml.c5.xlarge", "us-east-1").usd
    assert hourly == 0.204
    assert cost.cost_per_inference_at_saturation(hourly, 648) == pytest.approx(5.2469e-6,
                                                                                 rel=1e-4)


def test_cost_at_offered_load_is_price_over_requests_served():
    # 0.204 $/h serving 5.4 req/s (half of 648/min): twice the saturation figure.
    at_load = cost.cost_per_inference_at_load(0.204, 5.4)
    assert at_load == pytest.approx(0.204 / (5.4 * 3600))
    assert at_load == pytest.approx(2 * cost.cost_per_inference_at_saturation(0.204, 648))
    with pytest.raises(ValueError, match="served_rps"):
        cost.cost_per_inference_at_load(0.204, 0)


def test_each_invocation_is_rounded_up_to_a_whole_millisecond(lam):
    assert cost.billed_ms([0.2, 1.0, 1.01], 3) == 4.0
    assert cost.billed_ms(100.2, 10) == 1010.0
    one = cost.lambda_bill(requests=1, duration_ms=100.2, memory_mb=1024, prices=lam)
    assert one.duration_usd == pytest.approx(0.101 * 0.0000166667)
    with pytest.raises(ValueError, match="2 durations for 3 requests"):
        cost.billed_ms([1.0, 2.0], 3)


def test_init_duration_is_billed_at_the_on_demand_rate(lam):
    bill = cost.lambda_bill(requests=0, duration_ms=0.0, memory_mb=2048, prices=lam,
                            init_ms=[499.5, 1000.0])
    # (500 + 1000) ms x 2 GB = 3 GB-s.
    assert bill.init_usd == pytest.approx(3.0 * 0.0000166667)
    assert bill.total_usd == pytest.approx(bill.init_usd)


def test_provisioned_concurrency_reserves_for_the_period_and_discounts_duration(lam):
    bill = cost.lambda_bill(requests=36_000, duration_ms=100, memory_mb=1024, prices=lam,
                            provisioned_concurrency=2, period_s=3600, provisioned_share=1.0)
    assert bill.provisioned_usd == pytest.approx(2 * 1 * 3600 * 0.0000041667)
    assert bill.provisioned_duration_usd == pytest.approx(3600 * 0.0000097222)
    assert bill.duration_usd == 0.0
    half = cost.lambda_bill(requests=36_000, duration_ms=100, memory_mb=1024, prices=lam,
                            provisioned_concurrency=2, period_s=3600, provisioned_share=0.5)
    assert half.duration_usd == pytest.approx(1800 * 0.0000166667)
    assert half.provisioned_duration_usd == pytest.approx(1800 * 0.0000097222)
    with pytest.raises(ValueError, match="provisioned_concurrency > 0"):
        cost.lambda_bill(requests=1, duration_ms=1, memory_mb=1024, prices=lam,
                         provisioned_share=0.5)


def test_arm64_duration_is_cheaper_than_x86(lam):
    kw = dict(requests=1000, duration_ms=50, memory_mb=1024, prices=lam)
    x86 = cost.lambda_bill(architecture="x86_64", **kw)
    arm = cost.lambda_bill(architecture="arm64", **kw)
    assert arm.duration_usd == pytest.approx(50 * 0.0000133334)
    assert arm.total_usd < x86.total_usd
    with pytest.raises(ValueError, match="'sparc'"):
        cost.lambda_bill(architecture="sparc", **kw)


def test_steady_rate_cost_per_hour_matches_the_bill_over_one_hour(lam):
    hourly = cost.lambda_cost_per_hour(10, duration_ms=100, memory_mb=3072, prices=lam)
    bill = cost.lambda_bill(requests=36_000, duration_ms=100, memory_mb=3072, prices=lam)
    assert hourly == pytest.approx(bill.total_usd)
    # 10 req/s x 0.1 s = 1 busy environment: one provisioned environment takes all of it.
    warm = cost.lambda_cost_per_hour(10, duration_ms=100, memory_mb=3072, prices=lam,
                                     provisioned_concurrency=1)
    billed = cost.lambda_bill(requests=36_000, duration_ms=100, memory_mb=3072, prices=lam,
                              provisioned_concurrency=1, period_s=3600, provisioned_share=1.0)
    assert warm == pytest.approx(billed.total_usd)
    assert warm < hourly  # fully used provisioned concurrency is cheaper than on demand


def test_lambda_memory_out_of_range_is_refused(lam):
    with pytest.raises(ValueError, match=r"memory_mb must be within 128..10240, got 64"):
        cost.lambda_bill(requests=1, duration_ms=1, memory_mb=64, prices=lam)


def test_serverless_bills_duration_per_gb_and_data_processed(table):
    sls = table.region().sagemaker_serverless
    assert sls is not None
    bill = cost.serverless_bill(requests=1_000_000, duration_ms=100, memory_mb=2048, prices=sls,
                                bytes_in_per_request=512, bytes_out_per_request=1536)
    # 2 GB x 0.1 s x 1e6 x 0.00002 = 4.00; 2 KiB x 1e6 = 1.907 GiB x 0.016.
    assert bill.duration_usd == pytest.approx(4.00)
    assert bill.data_usd == pytest.approx(2048e6 / 1024**3 * 0.016)
    assert bill.per_million_usd == pytest.approx(bill.total_usd)
    with pytest.raises(ValueError, match="one of"):
        cost.serverless_bill(requests=1, duration_ms=1, memory_mb=1500, prices=sls)


def test_serverless_provisioned_concurrency_without_a_price_says_what_to_add(table):
    sls = table.region().sagemaker_serverless
    with pytest.raises(prices.PriceError, match="provisioned_concurrency_gb_second"):
        cost.serverless_bill(requests=1, duration_ms=1, memory_mb=1024, prices=sls,
                             provisioned_concurrency=1, period_s=60)


def test_hourly_cost_of_instances_and_user_priced_local_machines(table):
    two = CostDrivers(kind="instance", instance_type="ml.c5.xlarge", instance_count=2)
    assert cost.hourly_cost(two, table) == pytest.approx(0.408)
    local = CostDrivers(kind="local", instance_count=2, cpus=4)
    with pytest.raises(prices.PriceError, match="per_core_hour"):
        cost.hourly_cost(local, table)
    priced = table.with_local(per_core_hour=0.05, source="our rack", as_of=dt.date(2026, 1, 1))
    assert cost.hourly_cost(local, priced) == pytest.approx(0.40)
    assert cost.hourly_cost(local, table.with_local(per_machine_hour=0.3)) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="billed per request"):
        cost.hourly_cost(CostDrivers(kind="lambda", memory_mb=1024), table)
    with pytest.raises(prices.PriceError, match=r"ml.p5.48xlarge"):
        cost.hourly_cost(CostDrivers(kind="instance", instance_type="ml.p5.48xlarge"), table)


def test_no_price_from_the_table_is_written_as_a_literal_in_cost_code(table):
    values = {p.usd for p in _all_prices(table)} - {0.0, 1.0}
    modules = ["cost.py", "breakeven.py", "recommend.py", "prices.py", "price_list.py"]
    for name in modules:
        tree = ast.parse((BENCH / name).read_text())
        literals = {n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, float)}
        assert not literals & values, f"{name} holds price literals {literals & values}"


def _all_prices(table: prices.PriceTable) -> list[prices.Price]:
    out: list[prices.Price] = []
    for region in table.regions.values():
        lam = region.lambda_
        out.append(lam.requests_per_million)
        for group in (lam.duration_gb_second, lam.provisioned_concurrency_gb_second,
                      lam.provisioned_duration_gb_second, region.sagemaker_hosting_per_hour):
            out.extend(group.values())
        sls = region.sagemaker_serverless
        if sls is not None:
            out.extend(p for p in (sls.duration_gb_second, sls.data_processed_per_gb) if p)
    return out


def test_cost_per_million_at_load_dispatches_on_the_deployment_kind(table):
    c5 = CostDrivers(kind="instance", instance_type="ml.c5.xlarge", instance_count=1)
    assert cost.cost_per_million_at_load(c5, table, served_rps=10.8) == pytest.approx(5.2469,
                                                                                      rel=1e-4)
    lam3 = CostDrivers(kind="lambda", memory_mb=3072, architecture="x86_64")
    assert cost.cost_per_million_at_load(lam3, table, served_rps=5, duration_ms=100
                                         ) == pytest.approx(5.20, abs=1e-4)
    sls = CostDrivers(kind="serverless", memory_mb=2048, max_concurrency=10)
    assert cost.cost_per_million_at_load(sls, table, served_rps=5, duration_ms=100
                                         ) == pytest.approx(4.00)
    with pytest.raises(ValueError, match="needs duration_ms"):
        cost.cost_per_million_at_load(lam3, table, served_rps=5)
