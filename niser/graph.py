"""Session graphs for a batch, built with array operations only (no per-sample Python loop).

For each session the nodes are its distinct items in ascending item order (as in SR-GNN), the
edges its consecutive clicks (u -> v, counted once), and the adjacency is normalised by degree:
``adj_out[u, v] = 1 / outdeg(u)`` and ``adj_in[v, u] = 1 / indeg(v)`` for each edge u -> v.
For the session [1, 2, 1, 3] the nodes are (1, 2, 3) and::

    adj_in  = [[0, 1, 0],     adj_out = [[0, .5, .5],
               [1, 0, 0],                [1,  0,  0],
               [1, 0, 0]]                [0,  0,  0]]

Each batch is padded to its own longest session, not the dataset's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch is imported only by ``GraphBatch.tensors``: this module runs without it
    import torch

LongSessions = Literal["truncate", "clamp"]


@dataclass(frozen=True)
class GraphBatch:
    """Arrays for one batch; ``n`` = most distinct items, ``L`` = longest (kept) session."""

    nodes: np.ndarray  # (B, n) int64 item indices, 0-padded
    adj: np.ndarray  # (B, n, 2n) float32: [adj_in | adj_out]
    alias: np.ndarray  # (B, L) int64: position of each click in ``nodes``, left-aligned
    positions: np.ndarray  # (B, L) int64: 0 for the last click, 1 for the one before, ...
    mask: np.ndarray  # (B, L) float32: 1 for real clicks
    last: np.ndarray  # (B,) int64: index in L of each session's last click

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """The arrays as tensors in ``NISER.forward`` order."""
        import torch

        arrays = (self.nodes, self.adj, self.alias, self.positions, self.mask, self.last)
        return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in arrays)


GROUP_MIN_ROWS = 16  # length_groups: the smallest group worth its own graph batch
GROUP_MAX_PADDING = 0.8  # length_groups: split only below this share of one batch's padded clicks


def ragged_take(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the runs ``[starts[i], starts[i] + lengths[i])`` laid end to end, and
    the offsets of the runs in that order."""
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return gather, offsets


def kept_lengths(lengths: np.ndarray, max_positions: int, long_sessions: LongSessions
                 ) -> np.ndarray:
    """Clicks of each session that reach its graph: ``truncate`` keeps the last
    ``max_positions``, ``clamp`` keeps all."""
    return np.minimum(lengths, max_positions) if long_sessions == "truncate" else lengths


def length_groups(lengths: np.ndarray, min_rows: int = GROUP_MIN_ROWS) -> list[np.ndarray]:
    """Row indices in one group, or two by session length (shorter ones first), so that each
    group's graphs pad to their own longest session.

    Padded work is rows x longest length per group; the split point is the one that minimises
    it, taken only when both groups hold at least ``min_rows`` rows and it pads under
    ``GROUP_MAX_PADDING`` of what one batch would.
    """
    b = lengths.size
    whole = [np.arange(b, dtype=np.int64)]
    if b < 2 * min_rows:
        return whole
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    split = np.arange(min_rows, b - min_rows + 1)
    padded = split * ordered[split - 1] + (b - split) * ordered[-1]
    best = int(np.argmin(padded))
    if padded[best] >= GROUP_MAX_PADDING * b * ordered[-1]:
        return whole
    return [order[: split[best]], order[split[best]:]]


def build_batch(
    items: np.ndarray,
    offsets: np.ndarray,
    max_positions: int = 12,
    long_sessions: LongSessions = "truncate",
) -> GraphBatch:
    """Build the session graphs of the ragged sessions ``items[offsets[i]:offsets[i+1]]``.

    ``long_sessions`` decides how sessions longer than ``max_positions`` meet the positional
    table: ``truncate`` keeps the most recent ``max_positions`` clicks; ``clamp`` keeps every
    click and gives all clicks older than the table the oldest position.
    """
    lengths = np.diff(offsets).astype(np.int64)
    if lengths.size == 0 or lengths.min() < 1:
        raise ValueError("every session needs at least one click")
    if long_sessions == "truncate" and lengths.max() > max_positions:
        keep = kept_lengths(lengths, max_positions, long_sessions)
        gather, offsets = ragged_take(offsets[1:] - keep, keep)
        items, lengths = items[gather], keep
    b = lengths.size
    total = int(offsets[-1] - offsets[0])
    items = np.asarray(items[offsets[0] : offsets[-1]], dtype=np.int64)
    offsets = offsets - offsets[0]
    sess = np.repeat(np.arange(b, dtype=np.int64), lengths)  # (total,) session of each click
    pos_in_sess = np.arange(total, dtype=np.int64) - offsets[sess]

    # distinct items per session, ascending: unique over (session, item) keys
    key = sess * (int(items.max()) + 1) + items
    uniq, inverse = np.unique(key, return_inverse=True)
    uniq_sess = uniq // (int(items.max()) + 1)
    first_of_sess = np.searchsorted(uniq_sess, np.arange(b))
    n_nodes = np.bincount(uniq_sess, minlength=b)
    node_idx = inverse - first_of_sess[sess]  # (total,) alias of each click
    n = int(n_nodes.max())
    nodes = np.zeros((b, n), dtype=np.int64)
    nodes[uniq_sess, np.arange(uniq.size) - first_of_sess[uniq_sess]] = uniq % (int(items.max()) + 1)

    big_l = int(lengths.max())
    alias = np.zeros((b, big_l), dtype=np.int64)
    alias[sess, pos_in_sess] = node_idx
    mask = np.zeros((b, big_l), dtype=np.float32)
    mask[sess, pos_in_sess] = 1.0
    from_end = lengths[sess] - 1 - pos_in_sess
    positions = np.zeros((b, big_l), dtype=np.int64)
    positions[sess, pos_in_sess] = np.minimum(from_end, max_positions - 1)

    # edges: consecutive clicks inside a session, each distinct edge once
    follow = sess[1:] == sess[:-1]
    e_s, e_u, e_v = sess[1:][follow], node_idx[:-1][follow], node_idx[1:][follow]
    a = np.zeros((b, n, n), dtype=np.float32)
    a[e_s, e_u, e_v] = 1.0
    out_deg = a.sum(axis=2, keepdims=True)
    in_deg = a.sum(axis=1, keepdims=True)
    adj_out = np.divide(a, out_deg, out=np.zeros_like(a), where=out_deg > 0)
    adj_in = np.divide(a, in_deg, out=np.zeros_like(a), where=in_deg > 0).transpose(0, 2, 1)
    adj = np.concatenate([adj_in, adj_out], axis=2)
    return GraphBatch(nodes, adj, alias, positions, mask, lengths - 1)
