"""Helpers shared by the Lambda tests: packages, toy handlers and ONNX-vs-torch comparison."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from deployers.lambda_package import Package, build_package


def build_or_skip(recommender: object, out: Path, architecture: str = "x86_64") -> Package:
    """Build the package; skip when the wheels can be neither found in the cache nor downloaded."""
    try:
        return build_package(recommender, out, "python3.11", architecture)  # type: ignore[arg-type]
    except RuntimeError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"the Lambda wheels are not cached and PyPI is unreachable: {exc}")
        raise


def toy_package(root: Path, body: str) -> Path:
    """A package directory whose ``lambda_handler.py`` is ``body`` (for runtime behaviour)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lambda_handler.py").write_text(textwrap.dedent(body))
    return root


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
