"""Benchmark figures rounded to what the measurement can tell, for MLflow and for people.

Promises:

- ``round_metric(name, value)`` rounds by what the name measures: milliseconds (``*_ms``) to
  0.01 ms, seconds (``*_s``) to 1 ms, money (``*usd*``) to 4 significant digits, request rates
  (``*_rps``) and fractions (``error_rate``, ``*_share``, ``*_fraction``, ``*_busy``,
  ``*_quota``) to 4 significant digits, anything else to 6. Whatever the rule, no result carries
  more than ``MAX_DIGITS`` (6) significant digits. A suffix after the first ``.`` (a target name,
  as in ``saturation_throughput_rps.lambda-1024mb``) does not change the rule; NaN and
  infinities pass through unchanged.
- ``round_frame`` applies the same rules to every numeric column of a table, by column name.
- ``fmt`` writes a number for people: at most 3 significant digits by default (2-4 allowed),
  no trailing zeros, thousands separated, an exponent only below 0.0001.
"""

from __future__ import annotations

import math

import pandas as pd

MAX_DIGITS = 6
MONEY_DIGITS = 4
RATE_DIGITS = 4
_FRACTIONS = ("error_rate", "_share", "_fraction", "_busy", "_quota")


def significant(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and infinities unchanged)."""
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


def _decimals(value: float, places: int) -> float:
    return float(value) if not math.isfinite(value) else round(float(value), places)


def round_metric(name: str, value: float) -> float:
    """``value`` of metric ``name`` rounded as the module docstring says."""
    base = name.split(".", 1)[0]
    if "usd" in base:
        out = significant(value, MONEY_DIGITS)
    elif base.endswith("_rps") or base.startswith(_FRACTIONS) or base.endswith(_FRACTIONS):
        out = significant(value, RATE_DIGITS)
    elif "_ms" in base:  # latency_p95_ms, lambda_init_ms_mean
        out = _decimals(value, 2)
    elif base.endswith("_s"):
        out = _decimals(value, 3)
    else:
        out = float(value)
    return significant(out, MAX_DIGITS)


def round_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every float column rounded by its name (``round_metric``)."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [round_metric(str(col), float(v)) for v in out[col]]
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` for a person: ``digits`` (2-4) significant digits, ``"-"`` for None or NaN."""
    if not 2 <= digits <= 4:
        raise ValueError(f"digits must be 2, 3 or 4, got {digits}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    v = significant(float(value), digits)
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    if abs(v) < 1e-4:
        return f"{v:.{digits - 1}e}"
    places = digits - 1 - math.floor(math.log10(abs(v)))
    return f"{v:.{places}f}".rstrip("0").rstrip(".")
