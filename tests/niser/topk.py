"""Comparing two top-k rankings that may differ only where scores tie."""

from __future__ import annotations

import numpy as np


def compare_topk(items_a: np.ndarray, scores_a: np.ndarray, items_b: np.ndarray,
                 scores_b: np.ndarray, tie: float = 1e-4) -> tuple[int, list[str]]:
    """(rows equal exactly, problems). Scores must agree to ``tie``; two rankings may differ
    only at a rank whose score ties (within ``tie``) with a neighbouring rank, or at the last
    rank (an item just outside the top-k tying with it): float32 rounding reorders ties."""
    exact, problems = 0, []
    k = items_a.shape[1]
    for row in range(items_a.shape[0]):
        a, b = scores_a[row], scores_b[row]
        if not np.allclose(a, b, atol=tie, rtol=0):
            problems.append(f"row {row}: scores differ by {np.abs(a - b).max():.2e}")
            continue
        differ = np.flatnonzero(items_a[row] != items_b[row])
        if differ.size == 0:
            exact += 1
        for pos in differ:
            tied = pos == k - 1 or abs(a[pos] - a[pos + 1]) <= tie or (
                pos > 0 and abs(a[pos] - a[pos - 1]) <= tie)
            if not tied:
                problems.append(f"row {row}, rank {pos}: item {items_a[row][pos]} vs "
                                f"{items_b[row][pos]} where scores do not tie")
                break
    return exact, problems
