"""A sample of a deployment's answers, checked against a reference ranking (the model in-process).

``AnswerSample`` keeps every ``every``-th answer a target gives during its sweep (up to ``cap``
requests), thread-safe; ``AnswerSample.check`` asks the reference for the same sessions and
compares each session's top-k. Two rankings may differ only where float32 rounding can reorder
them: at a rank whose score ties (within ``tie``) with a neighbouring rank, or at the last rank
(an item just outside the top-k tying with it); the scores themselves must agree to ``tie``
(``ranking_problem``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deployers.base import Prediction

TIE = 1e-4  # scores this close may swap places (batched and unbatched products round apart)


def ranking_problem(items_a: Sequence[int], scores_a: Sequence[float], items_b: Sequence[int],
                    scores_b: Sequence[float], tie: float = TIE) -> str | None:
    """Why two top-k rankings of one session disagree beyond float32 ties, or None."""
    if len(items_a) != len(items_b) or len(scores_a) != len(scores_b):
        return f"lengths differ: {len(items_a)} and {len(items_b)} items"
    worst = max((abs(a - b) for a, b in zip(scores_a, scores_b, strict=True)), default=0.0)
    if worst > tie:
        return f"scores differ by {worst:.2e}"
    k = len(items_a)
    for pos in range(k):
        if items_a[pos] == items_b[pos]:
            continue
        tied = pos == k - 1 or abs(scores_a[pos] - scores_a[pos + 1]) <= tie or (
            pos > 0 and abs(scores_a[pos] - scores_a[pos - 1]) <= tie)
        if not tied:
            return f"rank {pos}: item {items_a[pos]} against {items_b[pos]}, scores do not tie"
    return None


@dataclass(frozen=True)
class AnswerCheck:
    """Sessions compared, of them identical to the reference, differing only in ties, and the
    first real difference (None when there is none)."""

    sessions: int
    identical: int
    ties_only: int
    problem: str | None

    def line(self) -> str:
        verdict = "every one agrees" if self.problem is None else f"DIFFERS: {self.problem}"
        return (f"top-k of {self.sessions} sampled sessions against in-process: "
                f"{self.identical} identical, {self.ties_only} differ only in float32 ties; "
                f"{verdict}")


class AnswerSample:
    """Every ``every``-th answer offered, up to ``cap`` requests (thread-safe)."""

    def __init__(self, every: int = 10, cap: int = 300) -> None:
        if every < 1 or cap < 1:
            raise ValueError(f"every and cap must be >= 1, got {every} and {cap}")
        self.every, self.cap = every, cap
        self.kept: list[tuple[list[list[int]], int, Prediction]] = []
        self._seen = 0
        self._lock = threading.Lock()

    def offer(self, sessions: list[list[int]], k: int, answer: Prediction) -> None:
        with self._lock:
            self._seen += 1
            if self._seen % self.every == 0 and len(self.kept) < self.cap:
                self.kept.append((sessions, k, answer))

    def check(self, reference: Callable[[list[list[int]], int], Prediction],
              tie: float = TIE) -> AnswerCheck:
        """Compare every kept answer with ``reference``'s for the same sessions and k."""
        with self._lock:
            kept = list(self.kept)
        sessions = identical = ties_only = 0
        first: str | None = None
        for batch, k, got in kept:
            want = reference(batch, k)
            for row in range(len(batch)):
                sessions += 1
                problem = ranking_problem(want.items[row], want.scores[row], got.items[row],
                                          got.scores[row], tie)
                if problem is None:
                    same = got.items[row] == want.items[row]
                    identical, ties_only = identical + same, ties_only + (not same)
                elif first is None:
                    first = f"session {batch[row]}: {problem}"
        return AnswerCheck(sessions, identical, ties_only, first)
