"""NISER+ (Gupta et al., 2019), as in Figure 1 of Chahal et al. (ICPE'21).

Shapes: B sessions, n distinct items per session graph, L clicks, d embedding size, N items.
On Diginetica (N = 43097, d = 100) ``print(model)`` shows::

    embedding        Embedding(43098, 100)   row 0 is padding and is never scored
    pos_embedding    Embedding(12, 100)      0 = last click, 1 = the one before, ...
    gnn.linear_edge_in / linear_edge_out / linear_edge_f   Linear(100, 100)
    linear_one, linear_two                   Linear(100, 100)
    linear_three                             Linear(100, 1, bias=False)
    linear_transform                         Linear(200, 100)

``linear_edge_f`` is declared but unused by the gated GNN of SR-GNN, from which NISER inherits it;
it is kept so the module matches the published architecture (it receives no gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from niser.scoring import ItemScorer


class GatedGNN(nn.Module):
    """One or more gated graph steps over in- and out-edges (the SR-GNN cell)."""

    def __init__(self, dim: int, steps: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.linear_edge_in = nn.Linear(dim, dim)
        self.linear_edge_out = nn.Linear(dim, dim)
        self.linear_edge_f = nn.Linear(dim, dim)
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))
        self.b_iah = nn.Parameter(torch.empty(dim))
        self.b_oah = nn.Parameter(torch.empty(dim))

    def cell(self, adj: Tensor, hidden: Tensor) -> Tensor:
        n = hidden.shape[1]
        # adj: (B, n, 2n); hidden: (B, n, d)
        msg_in = torch.matmul(adj[:, :, :n], self.linear_edge_in(hidden)) + self.b_iah
        msg_out = torch.matmul(adj[:, :, n:], self.linear_edge_out(hidden)) + self.b_oah
        gi = F.linear(torch.cat([msg_in, msg_out], 2), self.w_ih, self.b_ih)  # (B, n, 3d)
        gh = F.linear(hidden, self.w_hh, self.b_hh)  # (B, n, 3d)
        i_r, i_i, i_n = gi.chunk(3, 2)
        h_r, h_i, h_n = gh.chunk(3, 2)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_i + h_i)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (hidden - new)

    def forward(self, adj: Tensor, hidden: Tensor) -> Tensor:
        for _ in range(self.steps):
            hidden = self.cell(adj, hidden)
        return hidden


class NISER(nn.Module):
    """Normalised item and session representations over a session graph."""

    def __init__(
        self,
        n_items: int,
        dim: int = 100,
        max_positions: int = 12,
        sigma: float = 16.0,
        dropout: float = 0.1,
        gnn_steps: int = 1,
    ) -> None:
        super().__init__()
        self.n_items, self.dim, self.sigma = n_items, dim, sigma
        self.max_positions = max_positions
        self.embedding = nn.Embedding(n_items + 1, dim)
        self.pos_embedding = nn.Embedding(max_positions, dim)
        self.dropout = nn.Dropout(dropout)
        self.gnn = GatedGNN(dim, gnn_steps)
        self.linear_one = nn.Linear(dim, dim)
        self.linear_two = nn.Linear(dim, dim)
        self.linear_three = nn.Linear(dim, 1, bias=False)
        self.linear_transform = nn.Linear(2 * dim, dim)
        self._cache: tuple[tuple[int, int], Tensor] | None = None
        self._scorers: dict[tuple[tuple[int, int], bool], ItemScorer] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.dim)
        for p in self.parameters():
            nn.init.uniform_(p, -std, std)

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Put every item embedding back on the unit sphere, in place (once per training step).

        As in the NISER+ reference, the normalisation is not differentiated through: the
        optimizer updates unit vectors and this projects them back before the next step.
        """
        w = self.embedding.weight
        w.div_(torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min_(1e-12))

    def train(self, mode: bool = True) -> NISER:
        """Switch mode; entering training drops the cached item table.

        Fused optimizers (``Adam(fused=True)``) update weights in place without bumping the
        tensor version that keys the cache, so the cache cannot outlive a training phase.
        """
        if mode:
            self._cache = None
            self._scorers = {}
        return super().train(mode)

    def item_table(self) -> Tensor:
        """L2-normalised item embeddings (N + 1, d).

        In training this is the embedding weight itself (kept normalised by ``renormalize_``),
        so gradients reach it directly; in inference it is normalised once and cached while
        the weights are unchanged.
        """
        w = self.embedding.weight
        if self.training:
            return w
        key = (w.data_ptr(), w._version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, F.normalize(w.detach(), dim=-1))
            self._scorers = {}
        return self._cache[1]

    def scorer(self, bf16: bool = False) -> ItemScorer:
        """The top-k scorer over the cached normalised table (inference; see niser.scoring),
        built once per set of weights and path."""
        if self.training:
            raise RuntimeError("NISER.scorer is for inference: call model.eval() first")
        table = self.item_table()
        assert self._cache is not None  # item_table() fills it in eval mode
        key = (self._cache[0], bf16)
        if key not in self._scorers:
            self._scorers[key] = ItemScorer(table, bf16=bf16)
        return self._scorers[key]

    def session_embedding(
        self, table: Tensor, nodes: Tensor, adj: Tensor, alias: Tensor, positions: Tensor,
        mask: Tensor, last: Tensor,
    ) -> Tensor:
        """L2-normalised session embeddings (B, d) from a normalised item table.

        In training the lookup's gradient is sparse (the rows of ``nodes`` only), not a dense
        (N + 1, d) table of zeros; pass ``table.detach().requires_grad_()`` and add its ``grad``
        into the table's after backward (as ``niser.train`` does) to spare the dense sum too.
        """
        lookup = F.embedding(nodes, table, sparse=True) if self.training else table[nodes]
        hidden = self.dropout(lookup)  # (B, n, d)
        hidden = self.gnn(adj, hidden)  # (B, n, d)
        seq = torch.gather(hidden, 1, alias.unsqueeze(-1).expand(-1, -1, self.dim))  # (B, L, d)
        seq = seq + self.pos_embedding(positions)  # (B, L, d)
        ht = seq[torch.arange(seq.shape[0], device=seq.device), last]  # (B, d)
        alpha = self.linear_three(torch.sigmoid(self.linear_one(ht).unsqueeze(1) + self.linear_two(seq)))
        a = torch.sum(alpha * seq * mask.unsqueeze(-1), 1)  # (B, d)
        s = self.linear_transform(torch.cat([a, ht], 1))  # (B, d)
        return F.normalize(s, dim=-1)

    def forward(
        self, nodes: Tensor, adj: Tensor, alias: Tensor, positions: Tensor, mask: Tensor,
        last: Tensor,
    ) -> Tensor:
        """Scores (B, N + 1) over item indices, scaled by sigma.

        Column 0 is the padding row: it is never a target, so in training it is just one more
        negative; in inference it is set to -inf so it is never recommended.
        """
        table = self.item_table()  # (N + 1, d)
        s = self.session_embedding(table, nodes, adj, alias, positions, mask, last)
        scores = torch.matmul(self.sigma * s, table.t())  # (B, N + 1)
        if not self.training:
            scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def topk(
        self, k: int, nodes: Tensor, adj: Tensor, alias: Tensor, positions: Tensor,
        mask: Tensor, last: Tensor, *, bf16: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Float32 scores and item indices (B, k) of the best items 1..N, best first, as
        ``torch.topk(self(...), k)`` up to the order of float32 ties; with ``bf16`` the
        candidates come from a bf16 product (``niser.scoring``). Inference only."""
        return self.scorer(bf16).topk(self.query(nodes, adj, alias, positions, mask, last), k)

    @torch.no_grad()
    def query(
        self, nodes: Tensor, adj: Tensor, alias: Tensor, positions: Tensor, mask: Tensor,
        last: Tensor,
    ) -> Tensor:
        """Sigma times the unit session embeddings (B, d): what ``forward`` multiplies with the
        item table. Inference only."""
        table = self.item_table()
        return self.sigma * self.session_embedding(table, nodes, adj, alias, positions, mask, last)
