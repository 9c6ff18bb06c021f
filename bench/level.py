"""One load level's raw records, and the pieces both loops share to make them.

Promises:

- Nothing is dropped: every request is a record (intended/actual start, end, latency, status,
  error class), errors and warm-up included. A request slower than ``timeout_s`` is a timeout.
- The process CPU used during a level is measured through the clock; above
  ``cpu_warn_fraction`` of the available cores the level is flagged ``cpu_saturated`` and a
  warning is logged: the generator itself may then be what limits the figures.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from bench.clock import Clock
from bench.level_usage import LevelUsage
from bench.load_settings import LoadSettings
from bench.stats import ERROR, OK, TIMEOUT, LevelStats, summarize
from deployers.base import InvocationError, Invoker

log = logging.getLogger(__name__)

Mode = Literal["closed", "open"]

Record = tuple[int, int, int, int, str, bool]
"""One request: intended start, actual start (-1: never started), end, status, error class,
warm-up. Absolute clock nanoseconds."""

FRAME_COLUMNS = ["mode", "level", "intended_ns", "start_ns", "end_ns", "latency_ms", "status",
                 "error", "warmup", "in_window"]


@dataclass
class LevelResult:
    """Raw records of one level plus how the generator fared. Times are ns from the level start."""

    mode: Mode
    level: float
    intended_ns: np.ndarray  # int64
    start_ns: np.ndarray  # int64, -1 for a request that never started
    end_ns: np.ndarray  # int64
    latency_ms: np.ndarray  # float64, end - intended
    status: np.ndarray  # int8: OK / ERROR / TIMEOUT
    error: np.ndarray  # object: error class ("" when ok)
    warmup: np.ndarray  # bool
    t0_ns: int
    t1_ns: int
    cpu_fraction: float
    cpu_saturated: bool
    late_starts: int = 0
    threads: int = 0
    abandoned: int = 0
    usage: LevelUsage | None = None  # the shaped stand-in's CPU (``bench.level_usage``)

    def stats(self) -> LevelStats:
        return summarize(
            self.level, self.intended_ns, self.end_ns, self.latency_ms, self.status,
            self.t0_ns, self.t1_ns,
        )

    def frame(self) -> pd.DataFrame:
        """One row per request (warm-up included, flagged)."""
        return pd.DataFrame({
            "mode": self.mode, "level": self.level,
            "intended_ns": self.intended_ns, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "latency_ms": self.latency_ms, "status": self.status, "error": self.error,
            "warmup": self.warmup,
            "in_window": (self.intended_ns >= self.t0_ns) & (self.intended_ns < self.t1_ns),
        })


def classify(exc: BaseException) -> tuple[int, str]:
    """Status and error class of a failed request (timeouts recognised through causes)."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    name = type(exc).__name__
    status_code = getattr(exc, "status", None)
    if status_code is not None:
        name = f"{name}({status_code})"
    if len(chain) > 1:
        name = f"{name}:{type(chain[-1]).__name__}"
    if any(isinstance(e, TimeoutError) for e in chain):
        return TIMEOUT, name
    return ERROR, name


def connection_failed(exc: BaseException) -> bool:
    """Whether a failed request got no answer because the connection failed
    (``InvocationError.connection``: refused, reset, DNS, a timeout to connect)."""
    return isinstance(exc, InvocationError) and exc.connection


def call(
    invoker: Invoker, batch: list[list[int]], k: int, timeout_ns: int, clock: Clock
) -> tuple[int, int, int, str, bool]:
    """Send one request: (start, end, status, error class, whether the connection failed)."""
    start = clock.now_ns()
    try:
        invoker(batch, k)
    except Exception as exc:  # every failure is a record, never dropped
        end = clock.now_ns()
        status, err = classify(exc)
        return start, end, status, err, connection_failed(exc)
    end = clock.now_ns()
    if end - start > timeout_ns:
        return start, end, TIMEOUT, "SlowerThanTimeout", False
    return start, end, OK, "", False


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class LevelClock:
    """Where a level started, on the wall and in CPU time, and its clock."""

    clock: Clock
    wall0_ns: int
    cpu0_s: float

    @classmethod
    def start(cls, clock: Clock) -> LevelClock:
        return cls(clock, clock.now_ns(), clock.cpu_s())

    def cpu_fraction(self) -> float:
        """Share of the available cores the process used since the start."""
        wall = (self.clock.now_ns() - self.wall0_ns) / 1e9
        return (self.clock.cpu_s() - self.cpu0_s) / (wall * cores()) if wall > 0 else 0.0


def finish(
    mode: Mode, level: float, records: list[Record], base: int, window: tuple[int, int],
    started: LevelClock, settings: LoadSettings, *, late: int = 0, threads: int = 0,
    abandoned: int = 0, generator_cpu: float | None = None,
) -> LevelResult:
    """The level's result from its records; ``base`` and ``window`` are absolute clock ns.
    ``generator_cpu`` is the generator's share of the cores when it ran in other processes
    (Locust); by default, this process's since ``started``."""
    cpu_fraction = started.cpu_fraction() if generator_cpu is None else generator_cpu
    saturated = cpu_fraction > settings.cpu_warn_fraction
    if saturated:
        log.warning(
            "load generator process used %.0f%% of %d cores at level %s (threshold %.0f%%): "
            "the figures may be limited by the generator, not the target",
            100 * cpu_fraction, cores(), level, 100 * settings.cpu_warn_fraction,
        )
    arr = np.array([r[:4] for r in records], dtype=np.int64).reshape(-1, 4)
    intended, start, end = arr[:, 0] - base, arr[:, 1], arr[:, 2] - base
    start = np.where(start >= 0, start - base, -1)
    return LevelResult(
        mode=mode, level=float(level), intended_ns=intended, start_ns=start, end_ns=end,
        latency_ms=(end - intended) / 1e6, status=arr[:, 3].astype(np.int8),
        error=np.array([r[4] for r in records], dtype=object),
        warmup=np.array([r[5] for r in records], dtype=bool),
        t0_ns=window[0] - base, t1_ns=window[1] - base, cpu_fraction=cpu_fraction,
        cpu_saturated=saturated, late_starts=late, threads=threads, abandoned=abandoned,
    )
