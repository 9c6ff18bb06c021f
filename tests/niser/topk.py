"""Comparing two top-k rankings that may differ only where scores tie."""

from __future__ import annotations

import numpy as np

from bench.answers import ranking_problem


def compare_topk(items_a: np.ndarray, scores_a: np.ndarray, items_b: np.ndarray,
                 scores_b: np.ndarray, tie: float = 1e-4) -> tuple[int, list[str]]:
    """(rows equal exactly, problems): rows compared by ``bench.answers.ranking_problem``."""
    exact, problems = 0, []
    for row in range(items_a.shape[0]):
        if np.array_equal(items_a[row], items_b[row]) and np.allclose(
                scores_a[row], scores_b[row], atol=tie, rtol=0):
            exact += 1
            continue
        problem = ranking_problem(items_a[row].tolist(), scores_a[row].tolist(),
                                  items_b[row].tolist(), scores_b[row].tolist(), tie)
        if problem is not None:
            problems.append(f"row {row}: {problem}")
    return exact, problems
