"""The payload mix of a power-tuning run: a fixed, weighted set of requests over real sessions.

One payload sent over and over measures one point of the function's cost curve. The mix sends
requests of three kinds of real test sessions, defined by session length (clicks in the prefix)
over the whole test set, with quantiles ``Q(p)`` taken as data values (numpy's
``inverted_cdf``, so every class holds at least one session):

- ``short``: length <= Q(0.25), weight 0.5;
- ``median``: Q(0.40) <= length <= Q(0.60), weight 0.3;
- ``long``: length >= Q(0.90), weight 0.2.

Half the traffic is short sessions (most requests of a recommender come early in a visit), a
fifth is the long tail that costs the most. On a test set with few distinct lengths two classes
can share sessions (e.g. Q(0.25) = Q(0.40)); they stay separate classes with their own weights.

Promises:

- ``class_counts(weights, n)`` splits ``n`` invocations as AWS Lambda Power Tuning's weighted
  payloads do (``generatePayloads`` in ``lambda/utils.js`` of alexcasalboni/aws-lambda-power-tuning):
  class ``i`` gets ``floor(w_i * n / sum(w))`` invocations, the last class the remainder, and
  ``n`` that gives any class a floor of 0 is refused (``ValueError``: ask for more
  invocations; 5 at least for the default weights).
- Every invocation carries ``batch`` sessions of ONE class, drawn with the seed from that
  class's sessions (without replacement when the class holds enough of them), so a class's
  durations stay apart and the p95 shows the long class.
- The order of the invocations is a seeded shuffle (the classes interleave, so a drift of the
  machine's speed during a run does not land on one class). The same sessions, batch, count and
  seed give the same mix, request for request.
- ``heaviest()`` is the payload with the most clicks in all (a ``long`` one): the CPU probe's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.payloads import Payloads
from niser.data import Samples
from niser.vocab import Vocabulary


@dataclass(frozen=True)
class SessionClass:
    """One kind of session: its share of the invocations and its length quantiles.

    A session belongs to the class when ``Q(low_q) <= length <= Q(high_q)``; ``None`` leaves
    that side open.
    """

    name: str
    weight: float
    low_q: float | None
    high_q: float | None


MIX_CLASSES: tuple[SessionClass, ...] = (
    SessionClass("short", 0.5, None, 0.25),
    SessionClass("median", 0.3, 0.40, 0.60),
    SessionClass("long", 0.2, 0.90, None),
)
"""The mix of the module docstring: short 50 %, median 30 %, long 20 %."""


@dataclass(frozen=True)
class MixedPayload:
    """One invocation's request: ``sessions`` (raw item ids) of class ``session_class``."""

    session_class: str
    sessions: list[list[int]]

    @property
    def clicks(self) -> int:
        """Items in all the sessions of the request."""
        return sum(len(s) for s in self.sessions)


def class_counts(weights: Sequence[float], invocations: int) -> list[int]:
    """Invocations per class: ``floor(w_i * n / sum(w))``, the last class the remainder.

    ``ValueError`` when a weight is not positive or a class's floor is 0 (Power Tuning checks
    every class, the last one too, before it hands the last one the remainder).
    """
    if not weights or any(not w > 0 for w in weights):
        raise ValueError(f"class weights must be positive, got {list(weights)}")
    total = float(sum(weights))
    floors = [math.floor(w * invocations / total) for w in weights]
    if min(floors) < 1:
        raise ValueError(f"{invocations} invocations give a class none (weights "
                         f"{list(weights)} -> {floors}); ask for at least "
                         f"{math.ceil(total / min(weights))} invocations")
    return [*floors[:-1], invocations - sum(floors[:-1])]


def length_bounds(lengths: np.ndarray, cls: SessionClass) -> tuple[int | None, int | None]:
    """The inclusive length bounds of ``cls`` over ``lengths`` (data-valued quantiles)."""
    def q(p: float | None) -> int | None:
        return None if p is None else int(np.quantile(lengths, p, method="inverted_cdf"))
    return q(cls.low_q), q(cls.high_q)


def _members(lengths: np.ndarray, bounds: tuple[int | None, int | None]) -> np.ndarray:
    low, high = bounds
    keep = np.ones(len(lengths), dtype=bool)
    if low is not None:
        keep &= lengths >= low
    if high is not None:
        keep &= lengths <= high
    return np.flatnonzero(keep)


def describe_bounds(bounds: tuple[int | None, int | None]) -> str:
    """``len <= 3``, ``2 <= len <= 4`` or ``len >= 9``."""
    low, high = bounds
    if low is None:
        return f"len <= {high}"
    if high is None:
        return f"len >= {low}"
    return f"{low} <= len <= {high}"


@dataclass(frozen=True)
class PayloadMix:
    """The requests of one power-tuning run, in the order they are sent (module docstring)."""

    classes: tuple[SessionClass, ...]
    bounds: dict[str, tuple[int | None, int | None]]
    batch: int
    seed: int
    payloads: list[MixedPayload]

    @classmethod
    def build(cls, sessions: Sequence[Sequence[int]], batch: int, invocations: int,
              seed: int = 0, classes: tuple[SessionClass, ...] = MIX_CLASSES) -> PayloadMix:
        """The mix over ``sessions`` (raw item ids); ``ValueError`` on an empty pool, a batch
        below 1 or too few invocations for the weights."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1 session per invocation, got {batch}")
        pool = [[int(i) for i in s] for s in sessions if len(s) > 0]
        if not pool:
            raise ValueError("no non-empty sessions to build the payload mix from")
        counts = class_counts([c.weight for c in classes], invocations)
        lengths = np.array([len(s) for s in pool])
        rng = np.random.default_rng(seed)
        bounds = {c.name: length_bounds(lengths, c) for c in classes}
        labels: list[str] = []
        drawn: list[list[list[int]]] = []
        for c, count in zip(classes, counts, strict=True):
            members = _members(lengths, bounds[c.name])
            for _ in range(count):
                picked = rng.choice(members, size=batch, replace=len(members) < batch)
                labels.append(c.name)
                drawn.append([pool[i] for i in picked])
        order = rng.permutation(len(labels))
        payloads = [MixedPayload(labels[i], drawn[i]) for i in order]
        return cls(classes, bounds, batch, seed, payloads)

    @classmethod
    def from_samples(cls, samples: Samples, vocab: Vocabulary, batch: int, invocations: int,
                     seed: int = 0, max_sessions: int | None = 10_000) -> PayloadMix:
        """The mix over the test prefixes of ``samples`` as raw ids (``Payloads.from_samples``
        decodes them, drawing ``max_sessions`` of them with the seed)."""
        pool = Payloads.from_samples(samples, vocab, batch_size=1, seed=seed,
                                     max_sessions=max_sessions)
        return cls.build([b[0] for b in pool.batches], batch, invocations, seed)

    def heaviest(self) -> MixedPayload:
        """The payload with the most clicks (the first such in sending order)."""
        return max(self.payloads, key=lambda p: p.clicks)

    def describe(self) -> str:
        """One line: each class with its weight and length bounds."""
        return ", ".join(f"{c.name} {c.weight:.0%} ({describe_bounds(self.bounds[c.name])})"
                         for c in self.classes)
