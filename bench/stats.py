"""Statistics of one load level, and the saturation throughput of a sweep. Pure functions.

Definitions (every figure the benchmark reports comes from here):

- The **window** of a level is ``[t0, t1)`` on the load generator's clock. A request belongs to
  the window when its *intended* send time falls in it (closed loop: intended = actual start).
  Warm-up requests fall before ``t0`` and are excluded.
- **count** = requests in the window; **ok** / **errors** / **timeouts** partition them.
- **Latency** percentiles, mean and max are over successful *and* timed-out requests (a timed-out
  request's latency is at least the timeout, so a dying target cannot flatter its tail). Failed
  requests (a fast error such as a refused connection) have no meaningful latency and are
  counted in ``error_rate`` only.
- **throughput_rps** = successful requests that *completed* inside the window / window length.
- **error_rate** = (errors + timeouts) / count.
- Percentiles use numpy's default linear interpolation between order statistics.
- **Saturation throughput** = the highest throughput among levels whose p95 <= SLO and whose
  error rate <= ``max_error_rate``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

OK, ERROR, TIMEOUT = 0, 1, 2
"""Status codes of one request."""


@dataclass(frozen=True)
class LevelStats:
    """Summary of one concurrency level (closed loop) or arrival rate (open loop)."""

    level: float
    count: int
    ok: int
    errors: int
    timeouts: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_rps: float
    error_rate: float
    window_s: float


def summarize(
    level: float,
    intended_ns: np.ndarray,
    end_ns: np.ndarray,
    latency_ms: np.ndarray,
    status: np.ndarray,
    t0_ns: int,
    t1_ns: int,
) -> LevelStats:
    """Statistics of the requests whose intended send time lies in ``[t0_ns, t1_ns)``.

    Arrays are aligned, one entry per request. ``end_ns`` is when the answer arrived (or when the
    request was given up). Empty selections give NaN figures and zero counts, never an error.
    """
    intended_ns = np.asarray(intended_ns, dtype=np.int64)
    end_ns = np.asarray(end_ns, dtype=np.int64)
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    status = np.asarray(status, dtype=np.int8)
    if not (len(intended_ns) == len(end_ns) == len(latency_ms) == len(status)):
        raise ValueError(
            "summarize: arrays differ in length "
            f"(intended {len(intended_ns)}, end {len(end_ns)}, latency {len(latency_ms)}, "
            f"status {len(status)}); pass one entry per request in each"
        )
    if t1_ns < t0_ns:
        raise ValueError(f"summarize: window ends before it starts (t0={t0_ns}, t1={t1_ns})")
    window_s = (t1_ns - t0_ns) / 1e9
    sel = (intended_ns >= t0_ns) & (intended_ns < t1_ns)
    st = status[sel]
    count = int(sel.sum())
    ok = int((st == OK).sum())
    errors = int((st == ERROR).sum())
    timeouts = int((st == TIMEOUT).sum())
    lat = latency_ms[sel][(st == OK) | (st == TIMEOUT)]
    if lat.size:
        p50, p90, p95, p99 = (float(v) for v in np.percentile(lat, [50, 90, 95, 99]))
        mean, mx = float(lat.mean()), float(lat.max())
    else:
        p50 = p90 = p95 = p99 = mean = mx = math.nan
    done = (status == OK) & (end_ns >= t0_ns) & (end_ns <= t1_ns)
    throughput = int(done.sum()) / window_s if window_s > 0 else math.nan
    return LevelStats(
        level=float(level),
        count=count,
        ok=ok,
        errors=errors,
        timeouts=timeouts,
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=mx,
        throughput_rps=throughput,
        error_rate=(errors + timeouts) / count if count else math.nan,
        window_s=window_s,
    )


def saturation_throughput(
    stats: Sequence[LevelStats], slo_ms: float, max_error_rate: float = 0.01
) -> float | None:
    """The highest ``throughput_rps`` among levels with p95 <= ``slo_ms`` and an error rate of
    at most ``max_error_rate``; ``None`` when no level qualifies."""
    if slo_ms <= 0:
        raise ValueError(f"slo_ms must be positive, got {slo_ms!r}")
    good = [
        s.throughput_rps
        for s in stats
        if s.p95_ms <= slo_ms and s.error_rate <= max_error_rate and s.ok > 0
    ]
    return max(good) if good else None


def stats_frame(stats: Sequence[LevelStats]) -> pd.DataFrame:
    """One row per level, columns named as the fields of ``LevelStats``."""
    cols = list(LevelStats.__dataclass_fields__)
    return pd.DataFrame([asdict(s) for s in stats], columns=cols)
