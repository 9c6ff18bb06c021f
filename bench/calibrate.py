"""Honesty check: measure a target whose answer takes a known, fixed time.

``calibrate`` sweeps the closed-loop generator over 1..32 users against a fresh
``bench.stub_server.StubServer`` through ``deployers.http.HttpInvoker`` (the very client the
benchmarks use) and tabulates p50 - delay, the overhead the measuring chain adds. ``measure`` does
the same against any invoker. The acceptance bound is ``0 <= p50 - delay <= 1 ms`` at every
level, with no failed request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.clock import MONOTONIC, Clock
from bench.level import LevelResult
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.stats import LevelStats
from bench.stub_server import StubServer
from bench.sweep import SweepResult, sweep
from deployers.base import Invoker
from deployers.http import HttpInvoker

DEFAULT_USERS = [1, 2, 4, 8, 16, 24, 32]
BOUND_MS = 1.0


@dataclass(frozen=True)
class Calibration:
    """The calibration table (one row per user count) and whether every row met the bound."""

    table: pd.DataFrame
    sweep: SweepResult
    delay_ms: float
    passed: bool
    bound_ms: float = BOUND_MS


def stub_payloads() -> Payloads:
    """The calibration's payload pool: 2,000 three-item sessions (the stub reads none of them)."""
    return Payloads([[i, i + 1, i + 2] for i in range(1, 2001)], seed=0)


def settings(warmup_s: float, duration_s: float) -> LoadSettings:
    """The calibration's load settings: 5 s request timeout."""
    return LoadSettings(warmup_s=warmup_s, duration_s=duration_s, timeout_s=5.0)


def measure(
    invoker: Invoker, delay_ms: float, users: list[int] | None = None, warmup_s: float = 1.0,
    duration_s: float = 3.0, bound_ms: float = BOUND_MS, clock: Clock = MONOTONIC,
) -> Calibration:
    """Closed-loop sweep against ``invoker``, which answers after ``delay_ms``; ``passed`` when
    every level has ``0 <= p50 - delay <= bound_ms`` and no failed request."""
    levels = users or DEFAULT_USERS
    result = sweep(invoker, stub_payloads(), levels, settings(warmup_s, duration_s), clock=clock)
    rows = [row(lv, st, delay_ms, bound_ms)
            for lv, st in zip(result.levels, result.stats(), strict=True)]
    table = pd.DataFrame(rows)
    passed = len(rows) == len(levels) and bool(table["ok"].all())
    return Calibration(table, result, delay_ms, passed, bound_ms)


def row(lv: LevelResult, st: LevelStats, delay_ms: float, bound_ms: float) -> dict[str, Any]:
    """One level's row of the calibration table; ``ok`` when ``0 <= p50 - delay <= bound_ms``
    and no request failed."""
    over = st.p50_ms - delay_ms
    return {
        "users": int(lv.level), "requests": st.count, "failed": st.errors + st.timeouts,
        "p50_ms": st.p50_ms, "p95_ms": st.p95_ms, "p99_ms": st.p99_ms,
        "p50_minus_delay_ms": over, "throughput_rps": st.throughput_rps,
        "generator_cpu_pct": 100 * lv.cpu_fraction,
        "ok": bool(0 <= over <= bound_ms and st.errors + st.timeouts == 0),
    }


def calibrate(
    delay_ms: float = 16.0, users: list[int] | None = None, warmup_s: float = 1.0,
    duration_s: float = 3.0, bound_ms: float = BOUND_MS,
) -> Calibration:
    """``measure`` against a fresh stub server answering after ``delay_ms``."""
    with StubServer(delay_ms) as server:
        return measure(HttpInvoker(server.url, timeout_s=5.0), delay_ms, users, warmup_s,
                       duration_s, bound_ms)


def format_table(cal: Calibration) -> str:
    """The table as fixed-width text, with the verdict (PASS or FAIL) on the last line."""
    t = cal.table.copy()
    for c in ("p50_ms", "p95_ms", "p99_ms", "p50_minus_delay_ms"):
        t[c] = t[c].map(lambda v: f"{v:.3f}")
    t["throughput_rps"] = t["throughput_rps"].map(lambda v: f"{v:.0f}")
    t["generator_cpu_pct"] = t["generator_cpu_pct"].map(lambda v: f"{v:.0f}")
    verdict = "PASS" if cal.passed else "FAIL"
    return (
        f"stub delay {cal.delay_ms:g} ms, bound 0 <= p50 - delay <= {cal.bound_ms:g} ms\n"
        f"{t.to_string(index=False)}\n{verdict}"
    )
