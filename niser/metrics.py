"""Recall@K and MRR@K over ranked item lists, and one evaluation loop for every scorer.

The model and the baselines are all scored by ``evaluate``: a scorer maps a batch of samples to
the top items (B, K) best first, and nothing else differs between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from niser.data import Samples

TopKFn = Callable[[Samples, int], np.ndarray]  # (batch, k) -> (B, k) item indices, best first


def metric_names(ks: Sequence[int]) -> list[str]:
    """The names ``MetricAccumulator.result`` (and so ``evaluate``) returns for cut-offs ``ks``."""
    return [name for k in sorted(ks) for name in (f"recall_{k}", f"mrr_{k}")]


class MetricAccumulator:
    """Sums hits and reciprocal ranks; ``result`` gives percentages as in the literature."""

    def __init__(self, ks: Sequence[int] = (10, 20)) -> None:
        self.ks = tuple(sorted(ks))
        self.n = 0
        self.hits = dict.fromkeys(self.ks, 0.0)
        self.rr = dict.fromkeys(self.ks, 0.0)

    def update(self, topk: np.ndarray, targets: np.ndarray) -> None:
        """``topk``: (B, >= max k) item indices best first; ``targets``: (B,) item indices."""
        topk = np.asarray(topk)
        if topk.ndim != 2 or topk.shape[0] != len(targets) or topk.shape[1] < self.ks[-1]:
            raise ValueError(f"topk must be (B, >= {self.ks[-1]}), got {topk.shape}")
        match = topk[:, : self.ks[-1]] == np.asarray(targets)[:, None]  # (B, K)
        has = match.any(axis=1)
        rank = np.where(has, match.argmax(axis=1), self.ks[-1])  # 0-based, K = miss
        for k in self.ks:
            inside = rank < k
            self.hits[k] += float(inside.sum())
            self.rr[k] += float((1.0 / (rank[inside] + 1)).sum())
        self.n += len(targets)

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples were evaluated")
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"recall_{k}"] = 100.0 * self.hits[k] / self.n
            out[f"mrr_{k}"] = 100.0 * self.rr[k] / self.n
        return out


def evaluate(
    topk_fn: TopKFn,
    samples: Samples,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 500,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, float]:
    """Recall@k and MRR@k (in %) of ``topk_fn`` over every sample, in order."""
    acc = MetricAccumulator(ks)
    k = max(ks)
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        batch = samples.subset(np.arange(start, min(start + batch_size, len(samples))))
        acc.update(topk_fn(batch, k), batch.targets)
    return acc.result()
