"""Scoring sessions against every item: the training loss and the exact top-k, in fp32 or bf16.

Shapes: B sessions, d embedding size, N + 1 item rows (row 0 = padding), k recommendations.
``query`` is sigma times the unit session embedding (B, d); ``table`` the unit item
embeddings (N + 1, d). The model always scores all items (no sampling).

Training (``softmax_loss``): the mean cross-entropy of softmax(query @ table.T) over all N + 1
columns, fused into one autograd function: the softmax is computed once and its backward is
``p - onehot`` in place (no log-softmax, no dense zero gradient, the 1/B scale applied to the
small operands). On the bf16 path the two operands are rounded to bfloat16 and the product runs
on the CPU's bf16 units with float32 accumulation; the softmax reads the bf16 scores and
computes in float32 (max, exponentials, sum), writing p rounded to bf16, which is exactly the
precision of the bf16 gradient products that consume it; the loss value is -log of the target's
probability in float32 (so within 2^-8 relative of p, about 0.004 per sample, of the float32
loss). The gradients reach the float32 weights (master copy, Adam state) as float32.

The top-k (``ItemScorer.topk``) is the float32 top-k. With ``bf16`` a bf16 product only chooses
candidates, which are rescored in float32:

* Error bound. With the operands rounded to bf16 (unit roundoff u = 2^-8), float32
  accumulation over d terms (gamma_d = d 2^-24 / (1 - d 2^-24)) and the result rounded to bf16,
  every bf16 score b_i is within ``delta = bf16_score_bound(|q|, d)`` of the float32 score f_i
  (|q| the query's norm, rows of ``table`` of norm <= 1 + 1e-5; the float32 product's own
  rounding is included). For sigma = 16, d = 100: delta = 0.1885.
* Candidates. Let v_k be the k-th largest bf16 score of a row. Every item of the float32 top-k
  has b_i >= v_k - 2 delta (k items have f >= v_k - delta, so the k-th largest f is at least
  that, and b_i >= f_i - delta). Rows are cut into chunks of ``CHUNK`` items; k chunks hold the
  k largest chunk maxima, each of them an item's score, so the k-th largest chunk maximum c_k
  is at most v_k. Every item with b_i >= t = c_k - 2 delta is a candidate: a superset of the
  items above v_k - 2 delta, found by searching only the chunks whose maximum reaches t. The
  candidates are rescored in float32 and their top-k is the float32 top-k. A row with more than
  ``MAX_CANDIDATES`` candidates (scores bunched within 2 delta of each other) is scored again in
  float32 whole.
* What can differ from ``torch.topk`` over the float32 product: only items whose float32 scores
  tie within the float32 rounding of a d-term dot product, ``tie = fp32_tie(|q|, d)``
  (rescoring sums in another order than the full product). The tie rule, per row, with f the
  float32 scores of ``NISER.forward``: (1) the k items are distinct and none is the padding
  row; (2) each returned score is within ``tie`` of the item's f; (3) the items are in
  descending f order up to ``tie``; (4) no item left out has an f more than ``tie`` above the
  lowest returned one. ``tie_rule_violations`` checks it; a top-k obeying it is a float32
  top-k of scores each moved by at most ``tie``.

Selecting the top-k on the float32 path: the top-k items lie in the k chunks with the largest
maxima, so only those are searched (one pass over the scores plus small top-k's, instead of a
top-k over all N + 1 columns per row). On the bf16 path the bf16 scores are widened to float32
(exactly) before the chunk maxima, ``BF16_ROW_BLOCK`` rows at a time so that they stay in cache:
float32 maxima run several times faster than bf16 ones on this CPU. Measured on this CPU (2
threads, Diginetica, d = 100, ``scripts/bench_inference.py``; a trained model has ~40 candidates
per row): the bf16 path is faster than float32 at every batch size measured, one row included
(a bf16 table is half the memory to read), so ``BF16_MIN_ROWS`` is 1; catalogues of fewer than
k chunks and k above ``BF16_MAX_K`` (the path is measured at k = 20) are scored in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

BF16_UNIT_ROUNDOFF = 2.0 ** -8
FP32_UNIT_ROUNDOFF = 2.0 ** -24
NORM_SLACK = 1e-5  # rows of the item table are unit vectors up to float32 rounding
CHUNK = 64  # items per chunk when selecting the top-k
BF16_ROW_BLOCK = 128  # bf16 path: rows scored at once (their float32 scores stay in cache)
MAX_CANDIDATES = 1024  # bf16 path: a row with more candidates is scored in float32 whole
BF16_MIN_ROWS = 1  # bf16 path: fewer rows are scored in float32 (measured: see above)
BF16_MAX_K = 32  # bf16 path: a larger k is scored in float32
CHUNKED_MIN_ROWS = 8  # fewer rows: one torch.topk over the row costs less than the chunk steps


def _gamma(dim: int) -> float:
    nu = dim * FP32_UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def fp32_tie(query_norm: Tensor | float, dim: int) -> Tensor | float:
    """Largest difference between two float32 evaluations of the same score (two summation
    orders of a ``dim``-term dot product): 2 gamma_d |q| (1 + slack)."""
    return 2.0 * _gamma(dim) * query_norm * (1.0 + NORM_SLACK)


def bf16_score_bound(query_norm: Tensor | float, dim: int) -> Tensor | float:
    """Bound on |bf16 score - float32 score| for a query of norm ``query_norm`` and unit rows.

    Operand rounding |q||t|(2u + u^2), accumulation and output rounding |q||t|(1 + u)^2
    (gamma_d + u), and the float32 product's own rounding gamma_d |q||t|.
    """
    u, g = BF16_UNIT_ROUNDOFF, _gamma(dim)
    return query_norm * (1.0 + NORM_SLACK) * ((2 * u + u * u) + (1 + u) ** 2 * (g + u) + g)


class _SoftmaxLoss(torch.autograd.Function):
    """Mean cross-entropy of softmax(query @ table.T) against ``targets``, fused."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, query: Tensor, table: Tensor,
                targets: Tensor, bf16: bool) -> Tensor:
        rows = torch.arange(query.shape[0], device=query.device)
        if bf16:
            t = table.to(torch.bfloat16)
            scores = torch.mm(query.to(torch.bfloat16), t.t())  # (B, N + 1) bf16
        else:
            t = table
            scores = torch.mm(query, table.t())  # (B, N + 1)
        p = torch.softmax(scores, dim=1)  # float32 arithmetic; bf16-rounded on the bf16 path
        p_target = p[rows, targets].float().clamp_min(torch.finfo(torch.float32).tiny)
        loss = -torch.log(p_target).mean()
        ctx.save_for_backward(query, t, p, targets)
        ctx.spent = False  # type: ignore[attr-defined]
        return loss

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: Tensor
                 ) -> tuple[Tensor, Tensor, None, None]:
        if ctx.spent:  # type: ignore[attr-defined]
            raise RuntimeError("softmax_loss reuses its buffers in backward: backward it once "
                               "(no retain_graph=True)")
        ctx.spent = True  # type: ignore[attr-defined]
        query, t, p, targets = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grads[0] / p.shape[0]
        p[torch.arange(p.shape[0], device=p.device), targets] -= 1.0  # p - onehot, in place
        # the scale goes on the small operands: no extra pass over the (B, N + 1) gradient
        grad_query = torch.mm(p, t).float() * scale  # (B, d)
        grad_table = torch.mm(p.t(), (query * scale).to(p.dtype)).float()  # (N + 1, d)
        return grad_query, grad_table, None, None


def softmax_loss(query: Tensor, table: Tensor, targets: Tensor, bf16: bool = False) -> Tensor:
    """Mean cross-entropy over all N + 1 item columns (row 0 is one more negative), as
    ``F.cross_entropy(query @ table.T, targets)``; with ``bf16`` the product is bf16."""
    out: Tensor = _SoftmaxLoss.apply(query, table, targets, bf16)
    return out


def tie_rule_violations(scores: Tensor, values: Tensor, index: Tensor, tie: Tensor | float
                        ) -> Tensor:
    """(B,) bool: rows of a top-k (``values``, ``index``, (B, k)) that break the tie rule of the
    module docstring against float32 ``scores`` (B, N + 1) (padding column 0 at -inf)."""
    tie = torch.as_tensor(tie, dtype=scores.dtype).expand(scores.shape[0])
    f = scores.gather(1, index)  # (B, k) float32 scores of the returned items
    ordered = torch.sort(index, dim=1).values
    bad = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1) | (index == 0).any(dim=1)
    bad |= ((values - f).abs() > tie[:, None]).any(dim=1)
    bad |= ((f[:, 1:] - f[:, :-1]) > tie[:, None]).any(dim=1)
    rest = scores.scatter(1, index, float("-inf")).amax(dim=1)
    return bad | (rest > f.amin(dim=1) + tie)


def chunked_topk(scores: Tensor, k: int, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """``torch.topk(scores, k, dim=1)`` (values, indices), searching only the k chunks of
    ``chunk`` columns with the largest maxima; equal up to the order of equal scores. The
    column count should be a multiple of ``chunk`` (else the scores are copied, padded)."""
    b, n = scores.shape
    if b < CHUNKED_MIN_ROWS or k * chunk * 2 >= n:
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices
    if n % chunk:
        scores = torch.nn.functional.pad(scores, (0, (-n) % chunk), value=float("-inf"))
    blocks = scores.view(b, -1, chunk)  # (B, C, chunk)
    best = torch.topk(blocks.amax(dim=2), k, dim=1).indices  # (B, k) chunk ids
    rows = torch.arange(b, device=scores.device).unsqueeze(1)
    picked = blocks[rows, best].flatten(1)  # (B, k chunk): whole chunks, row by row
    values, pos = torch.topk(picked, k, dim=1)
    index = best.gather(1, pos // chunk) * chunk + pos % chunk
    return values, index


class ItemScorer:
    """The float32 top-k over items 1..N of a fixed unit item table, on the fp32 or bf16 path.

    Build it once per set of weights (the model caches it); ``table`` is (N + 1, d) with row 0
    the padding row, which is never returned. The tables are kept padded with zero rows to a
    multiple of ``CHUNK`` rows, so that the scores come out ready to be cut into chunks.
    """

    def __init__(self, table: Tensor, bf16: bool = False) -> None:
        self.n_rows, self.dim = table.shape  # N + 1, d
        padded = torch.nn.functional.pad(table, (0, 0, 0, (-self.n_rows) % CHUNK))
        self.table = padded  # (C chunk, d) float32; rows past N are zero
        self.table_bf16 = padded.to(torch.bfloat16) if bf16 else None
        # rows through the bf16 path; their candidates, in all; of them, scored whole
        self.bf16_rows = self.candidates = self.fallback_rows = 0

    @property
    def bf16(self) -> bool:
        return self.table_bf16 is not None

    def _mask(self, scores: Tensor) -> Tensor:
        scores[:, 0] = float("-inf")  # padding item
        scores[:, self.n_rows:] = float("-inf")  # rows added to fill the last chunk
        return scores

    def scores(self, query: Tensor) -> Tensor:
        """Float32 scores (B, N + 1 padded to chunks); padding and filler columns at -inf."""
        return self._mask(torch.mm(query, self.table.t()))

    def topk(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Float32 scores and item indices (B, k), best first (see the module docstring)."""
        n = self.n_rows - 1
        if not 1 <= k <= n:
            raise ValueError(f"k={k} must be between 1 and the number of items ({n})")
        chunks = self.table.shape[0] // CHUNK
        small = query.shape[0] < BF16_MIN_ROWS or chunks < k
        if self.table_bf16 is None or small or k > BF16_MAX_K:
            return chunked_topk(self.scores(query), k)
        if query.shape[0] <= BF16_ROW_BLOCK:
            return self._bf16_topk(query, k)
        parts = [self._bf16_topk(q, k) for q in query.split(BF16_ROW_BLOCK)]
        return torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])

    def _bf16_topk(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        assert self.table_bf16 is not None
        b = query.shape[0]
        # bf16 product, widened to float32 (exact) for the selection: float32 maxima run
        # faster on this CPU than bf16 ones, more than paying for the widening
        approx = self._mask(torch.mm(query.to(torch.bfloat16), self.table_bf16.t()).float())
        blocks = approx.view(b, -1, CHUNK)
        maxima = blocks.amax(dim=2)  # (B, C)
        kth = torch.topk(maxima, k, dim=1, sorted=False).values.amin(dim=1)  # c_k <= v_k
        threshold = kth - 2.0 * bf16_score_bound(query.norm(dim=1), self.dim)  # (B,)
        rows, chunk = (maxima >= threshold.unsqueeze(1)).nonzero(as_tuple=True)
        picked = blocks.view(-1, CHUNK).index_select(0, rows * blocks.shape[1] + chunk)
        hit, offset = (picked >= threshold[rows].unsqueeze(1)).nonzero(as_tuple=True)
        rows, items = rows[hit], chunk[hit] * CHUNK + offset  # every candidate, row by row
        counts = torch.bincount(rows, minlength=b)
        self.bf16_rows += b
        self.candidates += int(rows.numel())
        whole = counts > MAX_CANDIDATES
        bunched = bool(whole.any())
        if bunched:  # scores bunched within the bound: those rows in float32
            keep = ~whole[rows]
            rows, items, counts = rows[keep], items[keep], counts.masked_fill(whole, 0)
        rescored = (self.table.index_select(0, items) * query.index_select(0, rows)).sum(dim=1)
        # the candidates, ragged per row, into a (B, most candidates) table padded with -inf
        column = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
        width = max(int(counts.max()), k)
        padded = approx.new_full((b, width), float("-inf"))
        padded[rows, column] = rescored
        ids = torch.zeros((b, width), dtype=items.dtype, device=items.device)
        ids[rows, column] = items
        values, pos = torch.topk(padded, k, dim=1)
        index = ids.gather(1, pos)
        if bunched:
            last = whole.nonzero().squeeze(1)
            self.fallback_rows += int(last.numel())
            values[last], index[last] = chunked_topk(self.scores(query[last]), k)
        return values, index
