"""Figures rounded to what the measurement can tell, by what each metric measures."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.rounding import MAX_DIGITS, fmt, round_frame, round_metric, significant


def digits(value: float) -> int:
    """Significant digits of ``value`` as Python writes it."""
    mantissa = repr(float(value)).split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) or 1


@pytest.mark.parametrize(("name", "value", "want"), [
    ("latency_p95_ms", 11.268488000000001, 11.27),
    ("lambda_init_ms_mean", 812.34567, 812.35),
    ("cold_start_s", 0.0062345, 0.006),
    ("cost_per_1m_usd", 0.16666666666666666, 0.1667),
    ("cost_per_hour_usd_at_workload", 0.0288, 0.0288),
    ("throughput_rps", 384.33123, 384.3),
    ("saturation_throughput_rps.lambda-1024mb", 693.3333, 693.3),
    ("error_rate", 0.000123456, 0.0001235),
    ("standin_cpu_share", 0.578912, 0.5789),
    ("requests", 1152.0, 1152.0),
])
def test_each_metric_is_rounded_by_what_it_measures(name, value, want):
    assert round_metric(name, value) == want


@pytest.mark.parametrize("value", [123456.789, 1234567.0, 98765.4321, 3.14159265358979])
@pytest.mark.parametrize("name", ["latency_max_ms", "requests", "cpu_periods", "cold_start_s"])
def test_no_rounded_metric_carries_more_than_six_significant_digits(name, value):
    assert digits(round_metric(name, value)) <= MAX_DIGITS


def test_nan_and_infinity_pass_through():
    assert math.isnan(round_metric("latency_p50_ms", math.nan))
    assert round_metric("cost_per_1m_usd", math.inf) == math.inf
    assert significant(0.0, 3) == 0.0


def test_round_frame_rounds_float_columns_by_their_names():
    frame = pd.DataFrame({"target": ["a"], "level": [1], "p95_ms": [2.34567],
                          "cost_per_hour_usd": [0.1234567]})
    out = round_frame(frame)
    assert out.loc[0, "p95_ms"] == 2.35 and out.loc[0, "cost_per_hour_usd"] == 0.1235
    assert out.loc[0, "target"] == "a" and out.loc[0, "level"] == 1
    assert frame.loc[0, "p95_ms"] == 2.34567  # the input is left alone


@pytest.mark.parametrize(("value", "n", "text"), [
    (0.0123456, 3, "0.0123"), (1.4199, 3, "1.42"), (384.33, 3, "384"), (12345.6, 3, "12,300"),
    (0.5, 3, "0.5"), (25.0, 3, "25"), (99.96, 4, "99.96"), (0.102, 4, "0.102"),
    (None, 3, "-"), (math.nan, 3, "-"), (0.0, 2, "0"),
])
def test_fmt_writes_two_to_four_significant_digits(value, n, text):
    assert fmt(value, n) == text
