"""How a load level is run: the settings of closed and open loops, the payload source they draw
from, the default concurrency levels and the time budget of a sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol

from pydantic import Field

from deployers.base import Settings
from niser.bounds import AtMost

DEFAULT_LEVELS: list[int] = [1, 2, 4, 6, 8, 11, 16]
"""Closed-loop user counts of a benchmark when none are given."""

MAX_LEVEL = 1024
LEVEL_WHY = ("each closed-loop user is a thread of the load generator on this machine; past "
             "a thousand they measure the generator, not the endpoint")
MAX_LEVELS = 32
LEVELS_WHY = "each level is a warm-up, a window and a timeout; a sweep is meant to take minutes"
MAX_LEVEL_S = 3600
"""The longest warm-up or window of one level, in seconds (and ``MAX_TIMEOUT_S`` per request)."""
MAX_TIMEOUT_S = 900
MAX_REQUESTS = 10_000_000
"""The most requests of a window or warm-up (each request's latency is kept in memory)."""
Level = Annotated[int, AtMost(MAX_LEVEL, LEVEL_WHY)]
"""A closed-loop user count (>= 1 is the caller's: ``Field(ge=1)`` or ``check_levels``)."""
LevelSeconds = Annotated[float, AtMost(MAX_LEVEL_S, "a level is a steady-state sample; an hour "
                                                    "of one is a soak test (scripts/soak.py)")]
Requests = Annotated[int, AtMost(MAX_REQUESTS, "each request's latency is kept in memory")]


def check_levels(levels: Sequence[int], option: str = "levels") -> list[int]:
    """``levels`` as a list when it holds 1..``MAX_LEVELS`` counts of 1..``MAX_LEVEL`` users;
    else ``ValueError`` naming ``option``, the value and the limit with its reason."""
    values = list(levels)
    if not values:
        raise ValueError(f"{option}: need one or more user counts, got none")
    if len(values) > MAX_LEVELS:
        raise ValueError(f"{option}: {len(values)} levels, more than the limit of {MAX_LEVELS}: "
                         f"{LEVELS_WHY}")
    for v in values:
        if v < 1 or v > MAX_LEVEL:
            why = "a level has at least one user" if v < 1 else LEVEL_WHY
            raise ValueError(f"{option}: {v} users is outside 1..{MAX_LEVEL}: {why}")
    return values

GRACE_S = 0.2
"""Extra wait after the per-request timeout before a level gives up on its threads."""

LEVEL_SLACK_S = 1.0
"""Per level, on top of warm-up + window + timeout, in a sweep's default budget."""


class PayloadSource(Protocol):
    """Anything that hands out request batches, thread-safely (``bench.payloads.Payloads``)."""

    def next_batch(self) -> list[list[int]]: ...


class LoadSettings(Settings):
    """How one load level is run (closed or open loop)."""

    warmup_s: LevelSeconds = Field(
        default=2.0, ge=0, description="Warm-up seconds before the window (excluded from stats)."
    )
    warmup_requests: Requests = Field(
        default=10_000, ge=0, description="Warm-up also ends after this many requests."
    )
    duration_s: LevelSeconds = Field(
        default=10.0, gt=0, description="Steady-state window length in seconds."
    )
    max_requests: Requests = Field(
        default=100_000, ge=1, description="The window also ends after this many requests."
    )
    timeout_s: Annotated[float, AtMost(MAX_TIMEOUT_S, "Lambda's longest function timeout (SageMaker "
                                                      "answers within 60 s)")] = Field(
        default=10.0, gt=0, description="A request slower than this counts as a timeout."
    )
    k: int = Field(default=20, ge=1, le=1000, description="Top-k asked of the model per request.")
    cpu_warn_fraction: float = Field(
        default=0.9, gt=0, le=1,
        description="Flag a level when the process uses more than this share of the cores.",
    )

    def level_worst_case_s(self) -> float:
        """The longest one level can last: warm-up + window + one timeout + grace."""
        return self.warmup_s + self.duration_s + self.timeout_s + GRACE_S

    def sweep_budget_s(self, levels: Sequence[float]) -> float:
        """Time budget of a sweep over ``levels``: each level's warm-up, window and timeout plus
        ``LEVEL_SLACK_S``."""
        return len(levels) * (self.warmup_s + self.duration_s + self.timeout_s + LEVEL_SLACK_S)


class OpenLoopSettings(LoadSettings):
    """Open-loop extras: arrival process and generator capacity."""

    arrival: Literal["constant", "poisson"] = Field(
        default="constant",
        description="Inter-arrival times: fixed 1/rate, or exponential with mean 1/rate.",
    )
    seed: int = Field(default=0, description="Seed of the Poisson schedule.")
    max_workers: Level = Field(
        default=256, ge=1, description="Most worker threads the generator may start."
    )
    late_tolerance_ms: float = Field(
        default=1.0, ge=0,
        description="A start later than this after its intended send time counts as late.",
    )
