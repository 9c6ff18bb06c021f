"""Helpers shared by the bench tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.clock import Clock
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from deployers.base import Prediction


def sleeper(delay: float) -> Callable[..., Prediction]:
    """An invoker that answers after ``delay`` real seconds."""
    def invoke(sessions: list[list[int]], k: int = 20) -> Prediction:
        time.sleep(delay)
        return Prediction([[1]], [[1.0]])
    return invoke


def answers_after(clock: Clock, delay: float) -> Callable[..., Prediction]:
    """An invoker that answers after ``delay`` seconds of ``clock``'s time."""
    def invoke(sessions: list[list[int]], k: int = 20) -> Prediction:
        clock.sleep(delay)
        return Prediction([[1]] * len(sessions), [[1.0]] * len(sessions))
    return invoke


def payloads() -> Payloads:
    return Payloads([[i, i + 1] for i in range(1, 200)], seed=0)


def quick(**kw: float) -> LoadSettings:
    """A short level: 50 ms warm-up, 300 ms window, 1 s timeout, unless overridden."""
    base: dict[str, float] = dict(warmup_s=0.05, duration_s=0.3, timeout_s=1.0)
    base.update(kw)
    return LoadSettings(**base)  # type: ignore[arg-type]
