"""Cold start: the time from a finished deployment to its first successful answer."""

from __future__ import annotations

from dataclasses import dataclass

from bench.clock import MONOTONIC, Clock
from bench.level import classify
from deployers.base import Invoker


@dataclass(frozen=True)
class ColdStart:
    """Time from ``since`` (deploy finished) to the first successful response."""

    seconds: float | None
    attempts: int
    last_error: str


def cold_start(
    invoker: Invoker, batch: list[list[int]], since_ns: int | None = None,
    timeout_s: float = 120.0, poll_s: float = 0.05, k: int = 20, clock: Clock = MONOTONIC,
) -> ColdStart:
    """Poll ``invoker`` every ``poll_s`` until it answers; ``since_ns`` is a ``clock.now_ns()``
    taken when the deployment finished (default: now). ``seconds`` is ``None`` if nothing
    answered within ``timeout_s``."""
    since = clock.now_ns() if since_ns is None else since_ns
    deadline = since + int(timeout_s * 1e9)
    attempts, last = 0, ""
    while clock.now_ns() < deadline:
        attempts += 1
        try:
            invoker(batch, k)
        except Exception as exc:  # not up yet: remember why and poll again
            last = classify(exc)[1] + f": {exc}"[:200]
            clock.sleep(poll_s)
            continue
        return ColdStart((clock.now_ns() - since) / 1e9, attempts, "")
    return ColdStart(None, attempts, last)
