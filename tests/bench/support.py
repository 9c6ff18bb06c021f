"""Helpers shared by the bench tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from deployers.base import Prediction


def sleeper(delay: float) -> Callable[..., Prediction]:
    """An invoker that answers after ``delay`` seconds."""
    def invoke(sessions: list[list[int]], k: int = 20) -> Prediction:
        time.sleep(delay)
        return Prediction([[1]], [[1.0]])
    return invoke
