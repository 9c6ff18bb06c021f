"""When each click of a replay is meant to be sent. Pure functions of a trace and the pace.

Times are seconds from the start of the replay.

- ``recorded`` pace: sessions start in the log's order. When every session of the trace has a
  start time (a log with absolute times, e.g. Yoochoose), session ``i`` starts at
  ``(start_i - earliest start) / speedup``; otherwise (Diginetica's ``eventdate`` is a day only)
  sessions start as a seeded Poisson process at ``rate`` sessions/s. A click is sent at its
  session's start plus its recorded offset (Diginetica: ``timeframe``) divided by ``speedup``.
- ``poisson`` pace: sessions start as a seeded Poisson process at ``rate`` sessions/s, in the
  log's order; the clicks of a session are ``think_s / speedup`` apart.

A Poisson process starts at 0: the first session at 0, then exponential gaps of mean
``1 / rate`` drawn from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.replay_trace import Trace

Pace = Literal["recorded", "poisson"]
PACES: tuple[Pace, ...] = ("recorded", "poisson")


@dataclass(frozen=True)
class Schedule:
    """Intended send times, per session (in trace order) and per click, in seconds."""

    clicks_s: tuple[tuple[float, ...], ...]
    pace: Pace
    starts: Literal["recorded", "poisson"]  # where the session start times came from

    @property
    def starts_s(self) -> tuple[float, ...]:
        return tuple(c[0] for c in self.clicks_s)

    @property
    def duration_s(self) -> float:
        """The last intended send time (0 for an empty schedule)."""
        return max((c[-1] for c in self.clicks_s), default=0.0)


def poisson_starts(n: int, rate: float, seed: int) -> np.ndarray:
    """``n`` start times of a Poisson process at ``rate``/s: 0, then cumulative exponential gaps."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 sessions/s, got {rate!r}")
    if n <= 0:
        return np.zeros(0)
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def recorded_starts(starts_s: list[float], speedup: float) -> np.ndarray:
    """Recorded start times, from the earliest, divided by ``speedup``."""
    t = np.asarray(starts_s, dtype=np.float64)
    return (t - t.min()) / speedup if t.size else t


def _check(pace: str, rate: float | None, speedup: float, think_s: float) -> None:
    if pace not in PACES:
        raise ValueError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0 (2 replays twice as fast), got {speedup!r}")
    if not think_s >= 0:
        raise ValueError(f"think_s must be >= 0 seconds between clicks, got {think_s!r}")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 sessions/s, got {rate!r}")


def schedule(trace: Trace, pace: Pace, *, rate: float | None = None, speedup: float = 1.0,
             think_s: float = 1.0, seed: int = 0) -> Schedule:
    """The intended send time of every click of ``trace`` (see the module docstring).

    ``rate`` is needed whenever sessions start as a Poisson process; ``ValueError`` names the
    option that is missing or out of range."""
    _check(pace, rate, speedup, think_s)
    n = len(trace.sessions)
    if pace == "recorded" and not trace.timed:
        raise ValueError(f"pace 'recorded' needs click times, and {trace.source} has none (a "
                         "test.tsv records none): use pace 'poisson' with think_s")
    starts_from: Literal["recorded", "poisson"] = (
        "recorded" if pace == "recorded" and trace.started else "poisson")
    if starts_from == "recorded":
        starts = recorded_starts([float(s.start_s or 0.0) for s in trace.sessions], speedup)
    else:
        if rate is None:
            why = ("the trace has no session start times, so sessions start as a Poisson "
                   "process" if pace == "recorded" else "sessions start as a Poisson process")
            raise ValueError(f"rate (sessions/s) is required: {why}")
        starts = poisson_starts(n, rate, seed)
    clicks = []
    for start, session in zip(starts.tolist(), trace.sessions, strict=True):
        if pace == "recorded":
            offsets = [o / speedup for o in session.offsets_s or ()]
        else:
            offsets = [i * think_s / speedup for i in range(len(session.items))]
        clicks.append(tuple(start + o for o in offsets))
    return Schedule(tuple(clicks), pace, starts_from)
