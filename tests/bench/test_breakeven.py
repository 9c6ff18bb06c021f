"""Break-even between step-priced instances and Lambda, on hand-checkable numbers."""

from __future__ import annotations

import datetime as dt

import pytest

from bench import prices
from bench.breakeven import (
    InstanceOffer,
    LambdaOffer,
    break_even,
    instances_needed,
    plot_break_even,
)

DAY = dt.date(2026, 1, 1)


def _p(usd: float) -> prices.Price:
    return prices.Price(usd=usd, unit="test", as_of=DAY, source="test")


# Round test prices: 1 GB x 0.1 s x 0.000018 + 0.20/1M = $2e-6 per request, i.e. $0.0072 per
# hour per 1 req/s.
ROUND = prices.LambdaPrices(
    requests_per_million=_p(0.20),
    duration_gb_second={"x86_64": _p(0.000018), "arm64": _p(0.000018)},
    provisioned_concurrency_gb_second={"x86_64": _p(0.000005), "arm64": _p(0.000005)},
    provisioned_duration_gb_second={"x86_64": _p(0.00001), "arm64": _p(0.00001)},
)
LAMBDA_1GB_100MS = LambdaOffer("lambda 1 GB", duration_ms=100, memory_mb=1024, prices=ROUND,
                               provenance="measured-real")


def test_instances_needed_is_the_ceiling_of_rate_over_saturation():
    assert instances_needed(0, 100) == 1
    assert instances_needed(100, 100) == 1
    assert instances_needed(100.01, 100) == 2
    assert instances_needed(0.3, 0.1) == 3  # no float-noise extra instance
    assert instances_needed(0, 100, min_instances=0) == 0
    assert instances_needed(10, 100, min_instances=2) == 2
    with pytest.raises(ValueError, match="saturation_rps must be > 0, got 0"):
        instances_needed(10, 0)


def test_worked_example_breaks_even_at_50_requests_per_second():
    # Instance: $0.36/h, holds the SLO up to 100 req/s. Lambda: $0.0072/h per req/s.
    # One instance costs as much as Lambda at 0.36 / 0.0072 = 50 req/s. At 100+ req/s two
    # instances ($0.72) already match Lambda ($0.72 at 100), so instances stay cheaper.
    inst = InstanceOffer("ml.test", price_per_hour=0.36, saturation_rps=100,
                         provenance="measured-real")
    assert LAMBDA_1GB_100MS.cost_per_hour(50) == pytest.approx(0.36)
    assert LAMBDA_1GB_100MS.cost_per_hour(40) < inst.cost_per_hour(40)
    assert LAMBDA_1GB_100MS.cost_per_hour(60) > inst.cost_per_hour(60)
    result = break_even(inst, LAMBDA_1GB_100MS, max_rate_rps=400)
    assert result.rate_rps == pytest.approx(50)
    assert result.instances_cheaper_above == pytest.approx(50)
    assert len(result.lambda_cheaper) == 1
    assert result.lambda_cheaper[0] == pytest.approx((0.0, 50.0))


def test_step_function_can_hand_the_lead_back_to_lambda():
    # Saturation 60 req/s: at 60+ a second instance ($0.72) costs more than Lambda ($0.432)
    # until Lambda reaches $0.72 at 100 req/s; the same happens at every step up to 250.
    inst = InstanceOffer("ml.test", 0.36, 60, "measured-local")
    result = break_even(inst, LAMBDA_1GB_100MS, max_rate_rps=400)
    assert result.rate_rps == pytest.approx(50)
    expected = [(0, 50), (60, 100), (120, 150), (180, 200), (240, 250)]
    assert len(result.lambda_cheaper) == len(expected)
    for got, want in zip(result.lambda_cheaper, expected, strict=True):
        assert got == pytest.approx(want)
    assert result.instances_cheaper_above == pytest.approx(250)


def test_lambda_cheaper_over_the_whole_range_gives_no_break_even():
    # Real prices: Lambda 3 GB at 100 ms is $5.20e-6 per request; ml.c5.xlarge at its
    # saturation of 648/min is $5.2469e-6 per inference, so each step stays above Lambda.
    table = prices.load()
    lam = LambdaOffer("lambda 3 GB", 100, 3072, table.region().lambda_, "measured-real")
    inst = InstanceOffer("ml.c5.xlarge", table.instance_hourly("ml.c5.xlarge").usd, 10.8,
                         "measured-real")
    result = break_even(inst, lam, max_rate_rps=500)
    assert result.rate_rps is None and result.instances_cheaper_above is None
    assert result.lambda_cheaper == [(0.0, 500)]


def test_provisioned_lambda_dearer_than_an_idle_instance_breaks_even_at_zero():
    lam = LambdaOffer("lambda 1 GB, 100 provisioned", 100, 1024, ROUND, "measured-real",
                      provisioned_concurrency=100)  # 100 x 1 GB x 3600 s x 5e-6 = $1.80/h
    inst = InstanceOffer("ml.test", 0.36, 100, "measured-real")
    result = break_even(inst, lam, max_rate_rps=200)
    assert result.rate_rps == 0.0 and result.lambda_cheaper == []


def test_plot_writes_a_png_per_hour_and_per_month(tmp_path):
    inst = InstanceOffer("ml.test x N", 0.36, 60, "measured-real")
    for per in ("hour", "month"):
        out = plot_break_even(inst, LAMBDA_1GB_100MS, 300, tmp_path / f"be-{per}.png", per=per)
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
