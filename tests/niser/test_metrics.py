"""Recall@K and MRR@K on fixed rankings, and ``evaluate`` over a scorer."""

from __future__ import annotations

import numpy as np
import pytest

from niser.data import Samples
from niser.metrics import MetricAccumulator, evaluate


def _ranking_with_target_at(rank: int | None, target: int, k: int = 20) -> np.ndarray:
    """Items 1000.. in order, with ``target`` placed at 1-based ``rank`` (None = absent)."""
    row = np.arange(1000, 1000 + k)
    if rank is not None:
        row[rank - 1] = target
    return row


def test_hit_at_rank_one_counts_fully() -> None:
    acc = MetricAccumulator((10, 20))
    acc.update(_ranking_with_target_at(1, 7)[None, :], np.array([7]))
    assert acc.result() == {"recall_10": 100.0, "mrr_10": 100.0, "recall_20": 100.0,
                            "mrr_20": 100.0}


def test_hit_at_rank_twenty_counts_only_at_twenty() -> None:
    acc = MetricAccumulator((10, 20))
    acc.update(_ranking_with_target_at(20, 7)[None, :], np.array([7]))
    res = acc.result()
    assert res["recall_20"] == 100.0
    assert res["mrr_20"] == pytest.approx(100.0 / 20)
    assert res["recall_10"] == 0.0
    assert res["mrr_10"] == 0.0


def test_miss_scores_zero() -> None:
    acc = MetricAccumulator((10, 20))
    acc.update(_ranking_with_target_at(None, 7)[None, :], np.array([7]))
    assert all(v == 0.0 for v in acc.result().values())


def test_mixed_batch_averages_over_samples() -> None:
    # ranks 1, 4, 15, miss -> recall@10 = 2/4, recall@20 = 3/4
    topk = np.stack([_ranking_with_target_at(r, 7) for r in (1, 4, 15, None)])
    acc = MetricAccumulator((10, 20))
    acc.update(topk, np.full(4, 7))
    res = acc.result()
    assert res["recall_10"] == pytest.approx(50.0)
    assert res["recall_20"] == pytest.approx(75.0)
    assert res["mrr_10"] == pytest.approx(100.0 * (1 + 1 / 4) / 4)
    assert res["mrr_20"] == pytest.approx(100.0 * (1 + 1 / 4 + 1 / 15) / 4)


def test_updates_accumulate_across_batches() -> None:
    acc = MetricAccumulator((20,))
    acc.update(_ranking_with_target_at(2, 5)[None, :], np.array([5]))
    acc.update(_ranking_with_target_at(None, 5)[None, :], np.array([5]))
    assert acc.n == 2
    assert acc.result() == pytest.approx({"recall_20": 50.0, "mrr_20": 25.0})


def test_only_the_first_k_columns_count() -> None:
    row = np.concatenate([_ranking_with_target_at(None, 7), [7]])  # target at rank 21
    acc = MetricAccumulator((20,))
    acc.update(row[None, :], np.array([7]))
    assert acc.result()["recall_20"] == 0.0


def test_too_narrow_ranking_is_refused() -> None:
    acc = MetricAccumulator((10, 20))
    with pytest.raises(ValueError, match="topk must be"):
        acc.update(np.zeros((1, 10), dtype=np.int64), np.array([1]))


def test_empty_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        MetricAccumulator().result()


def test_evaluate_scores_every_sample_in_batches() -> None:
    # the scorer ranks the last prefix item first: a hit exactly when target == last item
    prefixes = [[1, 2], [3], [4, 5, 6], [2], [7]]
    targets = [2, 9, 6, 2, 8]
    samples = Samples.from_pairs(prefixes, targets)
    seen: list[int] = []

    def last_item_first(batch: Samples, k: int) -> np.ndarray:
        seen.append(len(batch))
        last = batch.items[batch.offsets[1:] - 1]
        return np.stack([np.r_[x, np.arange(100, 100 + k - 1)] for x in last])

    res = evaluate(last_item_first, samples, ks=(10, 20), batch_size=2)
    assert seen == [2, 2, 1]
    assert res["recall_20"] == pytest.approx(60.0)
    assert res["mrr_20"] == pytest.approx(60.0)
