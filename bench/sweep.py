"""Sweeps: one load level after another, within a time budget.

Promises:

- Levels run in order within ``budget_s`` (default ``LoadSettings.sweep_budget_s``); a level's
  window is shortened so that even a hung target cannot overrun the budget.
- The sweep returns what it measured, even when the target dies midway; it stops early after a
  level where every request failed, saying why in ``stopped_reason``.
- With ``observe`` (a shaped stand-in's cumulative ``Usage``, e.g. ``Deployer.usage``), every
  level carries what the stand-in used during it (``LevelResult.usage``, ``bench.level_usage``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from bench.clock import MONOTONIC, Clock
from bench.closed_loop import closed_loop
from bench.level import FRAME_COLUMNS, LevelResult, Mode
from bench.level_usage import LevelUsage, MachineTimes, machine_times
from bench.load_settings import DEFAULT_LEVELS, GRACE_S, LoadSettings, OpenLoopSettings, PayloadSource
from bench.open_loop import open_loop
from bench.stats import OK, LevelStats
from deployers.base import Invoker, Usage

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """The levels a sweep measured, in order, and why it stopped early (if it did)."""

    mode: Mode
    levels: list[LevelResult] = field(default_factory=list)
    planned: list[float] = field(default_factory=list)
    stopped_reason: str | None = None
    elapsed_s: float = 0.0

    @property
    def cpu_saturated(self) -> bool:
        return any(lv.cpu_saturated for lv in self.levels)

    def stats(self) -> list[LevelStats]:
        return [lv.stats() for lv in self.levels]

    def frame(self) -> pd.DataFrame:
        """Raw per-request records of every level."""
        if not self.levels:
            return pd.DataFrame(columns=FRAME_COLUMNS)
        return pd.concat([lv.frame() for lv in self.levels], ignore_index=True)


Observe = Callable[[], Usage | None]


def _observed(run: Callable[[float, LoadSettings], LevelResult], observe: Observe | None,
              clock: Clock, machine: MachineTimes) -> Callable[[float, LoadSettings], LevelResult]:
    """``run`` with the stand-in's usage read before and after the level."""
    if observe is None:
        return run

    def level(x: float, ss: LoadSettings) -> LevelResult:
        before, m0, t0 = observe(), machine(), clock.now_ns()
        res = run(x, ss)
        after, m1, t1 = observe(), machine(), clock.now_ns()
        if before is not None and after is not None:
            res.usage = LevelUsage.between(before, after, (t1 - t0) / 1e9, m0, m1)
        return res

    return level


def _run_sweep(
    mode: Mode, levels: list[float], s: LoadSettings, budget_s: float | None,
    run: Callable[[float, LoadSettings], LevelResult], clock: Clock,
    observe: Observe | None = None, machine: MachineTimes = machine_times,
    stop: threading.Event | None = None,
) -> SweepResult:
    if not levels:
        raise ValueError("levels is empty: give at least one concurrency level or rate")
    budget = budget_s if budget_s is not None else s.sweep_budget_s(levels)
    t_start = clock.now_ns()
    out = SweepResult(mode=mode, planned=[float(x) for x in levels])
    run = _observed(run, observe, clock, machine)
    for level in levels:
        if stop is not None and stop.is_set():
            out.stopped_reason = f"stopped before level {level}: the run is being cancelled"
            log.warning("sweep %s", out.stopped_reason)
            break
        left = budget - (clock.now_ns() - t_start) / 1e9
        if left < s.warmup_s + s.timeout_s + GRACE_S + 0.05:
            out.stopped_reason = f"time budget of {budget:.1f} s spent before level {level}"
            break
        # Shrink the window so that even a hung target cannot overrun the budget.
        duration = min(s.duration_s, left - s.warmup_s - s.timeout_s - GRACE_S)
        res = run(level, s.model_copy(update={"duration_s": duration}))
        out.levels.append(res)
        st = res.stats()
        log.info("level %s: %d requests, %d ok, p50 %.2f ms, p95 %.2f ms, %.1f req/s%s",
                 level, st.count, st.ok, st.p50_ms, st.p95_ms, st.throughput_rps,
                 "" if res.usage is None else f", stand-in {res.usage.cpu_share:.2f} CPU")
        if res.usage is not None and res.usage.contention_limited(level, mode):
            log.warning("level %s: the CPU quota (%.2f CPU) was meant to bind but the stand-in"
                        " used %.2f CPU with the machine %.0f%% busy: contention, not the shape,"
                        " limited it (shaping_bound=0)", level, res.usage.quota_total,
                        res.usage.cpu_share, 100 * res.usage.machine_busy)
        if st.count > 0 and st.ok == 0:
            out.stopped_reason = (
                f"every request at level {level} failed ({st.errors} errors, {st.timeouts} "
                f"timeouts; first error class {res.error[res.status != OK][0]!r}); "
                "the target is down"
            )
            log.warning("sweep stopped: %s", out.stopped_reason)
            break
    out.elapsed_s = (clock.now_ns() - t_start) / 1e9
    return out


def sweep(
    invoker: Invoker, payloads: PayloadSource, levels: list[int] | None = None,
    settings: LoadSettings | None = None, budget_s: float | None = None,
    clock: Clock = MONOTONIC, observe: Observe | None = None,
    machine: MachineTimes = machine_times, stop: threading.Event | None = None,
) -> SweepResult:
    """Closed loop at each user count in ``levels`` (default ``DEFAULT_LEVELS``), within
    ``budget_s`` seconds (default ``settings.sweep_budget_s(levels)``); once ``stop`` is set,
    no further level starts."""
    s = settings or LoadSettings()
    lv = list(levels) if levels is not None else list(DEFAULT_LEVELS)
    return _run_sweep("closed", [float(x) for x in lv], s, budget_s,
                      lambda level, ss: closed_loop(invoker, payloads, int(level), ss, clock, stop),
                      clock, observe, machine, stop)


def sweep_with(
    run: Callable[[int, LoadSettings], LevelResult], levels: list[int],
    settings: LoadSettings | None = None, budget_s: float | None = None,
    clock: Clock = MONOTONIC,
) -> SweepResult:
    """A closed-loop sweep whose levels another generator measures: ``run(users, settings)``
    (e.g. ``bench.locust_run``), under the same budget and early stop as ``sweep``."""
    s = settings or LoadSettings()
    return _run_sweep("closed", [float(x) for x in levels], s, budget_s,
                      lambda level, ss: run(int(level), ss), clock)


def rate_sweep(
    invoker: Invoker, payloads: PayloadSource, rates: list[float],
    settings: OpenLoopSettings | None = None, budget_s: float | None = None,
    clock: Clock = MONOTONIC, observe: Observe | None = None,
    machine: MachineTimes = machine_times,
) -> SweepResult:
    """Open loop at each arrival rate (requests/s) in ``rates``, within ``budget_s`` seconds."""
    s = settings or OpenLoopSettings()

    def level(rate: float, ss: LoadSettings) -> LevelResult:
        assert isinstance(ss, OpenLoopSettings)  # a copy of ``s``
        return open_loop(invoker, payloads, rate, ss, clock)

    return _run_sweep("open", [float(r) for r in rates], s, budget_s, level, clock, observe,
                      machine)
