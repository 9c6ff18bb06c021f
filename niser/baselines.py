"""Non-neural baselines POP, S-POP and Item-KNN, scored by the same ``niser.metrics.evaluate``.

Each baseline is fitted on the training sessions (``fit``) and ranks items for a batch of
samples (``topk(batch, k) -> (B, k)`` item indices, best first), so ``baseline.topk`` is a
``TopKFn``. Every ranking is fully determined: ties are broken by global popularity (training
clicks), then by item index, and rows are filled with the most popular remaining items when a
baseline has fewer than ``k`` candidates.

* ``Pop``: the most clicked items in training, the same list for every session.
* ``SPop``: the items of the current session by their count in it (in-session items are
  recommended by design), ties by global popularity, filled with globally popular items.
* ``ItemKNN``: the item-to-item baseline of Hidasi et al. (ICLR 2016) used by SR-GNN and NISER:
  candidates scored by their similarity to the session's LAST item,
  ``sim(i, j) = cooc(i, j) / ((supp_i + lambda) ** alpha * (supp_j + lambda) ** (1 - alpha))``
  with ``cooc(i, j) = sum over sessions of count_i * count_j`` and ``supp_i`` the clicks of ``i``
  (lambda = 20, alpha = 0.5: a regularised cosine). ``sim(i, i) = 0``; other items of the session
  are not excluded.

Training sessions can be given directly or as prefix-augmented ``Samples``, from which they are
rebuilt: a sample extended by the next sample (same prefix plus its target) is not a session end;
every other sample, with its target appended, is one whole session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp

from niser.data import Samples

SessionsLike = Samples | Sequence[Sequence[int]]


def sessions_from_samples(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Whole sessions (flat items, offsets) rebuilt from prefix-augmented samples.

    Sample ``i`` ends a session unless sample ``i + 1`` is exactly its prefix followed by its
    target (``augment_prefixes`` order). Samples that are not augmented are each one session.
    """
    n = len(samples)
    lens, off = samples.lengths, samples.offsets
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        cand = np.flatnonzero(lens[1:] == lens[:-1] + 1)  # i such that i+1 may extend i
        ok = samples.items[off[cand + 1] + lens[cand]] == samples.targets[cand]
        # compare the prefix of i with the first len_i items of i + 1, click by click
        rep = np.repeat(cand, lens[cand])
        step = np.arange(rep.size) - np.repeat(np.cumsum(lens[cand]) - lens[cand], lens[cand])
        same = samples.items[off[rep] + step] == samples.items[off[rep + 1] + step]
        bad = np.zeros(n, dtype=bool)
        bad[rep[~same]] = True
        cont[cand] = ok & ~bad[cand]
    ends = np.flatnonzero(~cont)
    sess_lens = lens[ends] + 1
    offsets = np.zeros(ends.size + 1, dtype=np.int64)
    np.cumsum(sess_lens, out=offsets[1:])
    pos = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], sess_lens)
    row = np.repeat(ends, sess_lens)
    is_target = pos == lens[row]
    items = np.where(is_target, samples.targets[row],
                     samples.items[np.minimum(off[row] + pos, len(samples.items) - 1)])
    return items.astype(np.int64), offsets


def _flat_sessions(train: SessionsLike) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(train, Samples):
        return sessions_from_samples(train)
    lens = np.fromiter((len(s) for s in train), dtype=np.int64, count=len(train))
    offsets = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    items = np.fromiter((i for s in train for i in s), dtype=np.int64, count=int(offsets[-1]))
    return items, offsets


class _Baseline:
    """Shared state: item count, click popularity and the popularity order."""

    name = "baseline"

    def __init__(self) -> None:
        self.n_items = 0
        self.popularity = np.zeros(1, dtype=np.int64)
        self.popular = np.zeros(0, dtype=np.int64)  # item indices 1..N, most clicked first
        self.pop_rank = np.zeros(1, dtype=np.int64)  # rank of each index in ``popular``

    def fit(self, train: SessionsLike, n_items: int) -> Self:
        """Learn from training sessions (or prefix-augmented samples) over items 1..n_items."""
        items, offsets = _flat_sessions(train)
        if items.size == 0:
            raise ValueError("no training sessions to fit on; pass non-empty sessions or samples")
        if items.min() < 1 or items.max() > n_items:
            raise ValueError(f"item indices must lie in 1..{n_items}, got {items.min()}.."
                             f"{items.max()}; pass n_items = the vocabulary size")
        self.n_items = n_items
        self.popularity = np.bincount(items, minlength=n_items + 1).astype(np.int64)
        self.popularity[0] = 0
        order = np.lexsort((np.arange(n_items + 1), -self.popularity))  # clicks desc, index asc
        self.popular = order[order != 0]
        self.pop_rank = np.empty(n_items + 1, dtype=np.int64)
        self.pop_rank[self.popular] = np.arange(n_items)
        self.pop_rank[0] = n_items
        self._fit(items, offsets)
        return self

    def _fit(self, items: np.ndarray, offsets: np.ndarray) -> None:
        """Baseline-specific learning on flat training sessions."""

    def _check(self, k: int) -> None:
        if self.n_items == 0:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(train, n_items)")
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k={k} must be between 1 and the number of items ({self.n_items})")

    def _rank(self, rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int,
              k: int) -> np.ndarray:
        """Top-k per row of the (row, item, score) candidates, unique per row.

        Order: score desc, popularity desc; rows with fewer than ``k`` candidates are filled
        with the most popular items that are not candidates of that row.
        """
        out = np.zeros((n_rows, k), dtype=np.int64)
        order = np.lexsort((self.pop_rank[items], -scores, rows))
        rows, items = rows[order], items[order]
        first = np.searchsorted(rows, np.arange(n_rows))
        place = np.arange(rows.size) - first[rows]
        keep = place < k
        out[rows[keep], place[keep]] = items[keep]
        n_cand = np.bincount(rows, minlength=n_rows)
        need = n_cand < k
        if need.any():
            top = self.popular[:k]
            stride = self.n_items + 1
            taken = np.isin(np.arange(n_rows)[:, None] * stride + top[None, :],
                            rows * stride + items)  # (n_rows, k): popular item is a candidate
            free_rank = np.cumsum(~taken, axis=1) - 1
            slot = n_cand[:, None] + free_rank
            fill = ~taken & (slot < k) & need[:, None]
            r, c = np.nonzero(fill)
            out[r, slot[r, c]] = top[c]
        return out

    def topk(self, batch: Samples, k: int) -> np.ndarray:
        """(B, k) item indices, best first, for each sample's prefix."""
        raise NotImplementedError


class Pop(_Baseline):
    """The ``k`` most clicked training items, for every session."""

    name = "POP"

    def topk(self, batch: Samples, k: int) -> np.ndarray:
        self._check(k)
        return np.broadcast_to(self.popular[:k], (len(batch), k)).copy()


class SPop(_Baseline):
    """Items of the current session by count in it, then by global popularity."""

    name = "S-POP"

    def topk(self, batch: Samples, k: int) -> np.ndarray:
        self._check(k)
        b = len(batch)
        sess = np.repeat(np.arange(b, dtype=np.int64), batch.lengths)
        stride = self.n_items + 1
        keys, counts = np.unique(sess * stride + batch.items, return_counts=True)
        return self._rank(keys // stride, keys % stride, counts.astype(np.float64), b, k)


class ItemKNN(_Baseline):
    """Items most similar to the session's last click (regularised cosine over sessions)."""

    name = "Item-KNN"

    def __init__(self, lam: float = 20.0, alpha: float = 0.5) -> None:
        super().__init__()
        if lam < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need lam >= 0 and 0 <= alpha <= 1, got lam={lam}, alpha={alpha}")
        self.lam, self.alpha = lam, alpha
        self.sim = sp.csr_matrix((1, 1))

    def _fit(self, items: np.ndarray, offsets: np.ndarray) -> None:
        lens = np.diff(offsets)
        sess = np.repeat(np.arange(lens.size), lens)
        # (sessions, items) click counts; duplicates are summed by the conversion to CSR
        x = sp.csr_matrix((np.ones(items.size), (sess, items)),
                          shape=(lens.size, self.n_items + 1))
        cooc = (x.T @ x).tocsr()
        cooc.setdiag(0)
        cooc.eliminate_zeros()
        supp = self.popularity.astype(np.float64) + self.lam
        left = sp.diags(np.where(supp > 0, supp, 1.0) ** -self.alpha)
        right = sp.diags(np.where(supp > 0, supp, 1.0) ** -(1.0 - self.alpha))
        self.sim = (left @ cooc @ right).tocsr()
        self.sim.sort_indices()

    def topk(self, batch: Samples, k: int) -> np.ndarray:
        self._check(k)
        last = batch.items[batch.offsets[1:] - 1]
        rows = self.sim[last]  # (B, N + 1) CSR: the last item's similarities
        r = np.repeat(np.arange(len(batch), dtype=np.int64), np.diff(rows.indptr))
        return self._rank(r, rows.indices.astype(np.int64), rows.data, len(batch), k)
