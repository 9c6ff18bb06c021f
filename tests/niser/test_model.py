"""NISER modules and shapes (Figure 1), padding never recommended, item-table cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from niser.data import Samples
from niser.graph import build_batch
from niser.model import NISER

DIGINETICA_ITEMS = 43097


@pytest.fixture(scope="module")
def diginetica_model() -> NISER:
    torch.manual_seed(0)
    return NISER(DIGINETICA_ITEMS, dim=100)


def _graph(sessions: list[list[int]]) -> tuple[torch.Tensor, ...]:
    s = Samples.from_pairs(sessions, [1] * len(sessions))
    return build_batch(s.items, s.offsets).tensors()


def test_figure_one_modules_and_shapes(diginetica_model: NISER) -> None:
    def shape(m: nn.Module) -> tuple[object, ...]:
        if isinstance(m, nn.Embedding):
            return ("Embedding", m.num_embeddings, m.embedding_dim)
        assert isinstance(m, nn.Linear)
        return ("Linear", m.in_features, m.out_features, m.bias is not None)

    layers = {name: shape(m) for name, m in diginetica_model.named_modules()
              if isinstance(m, nn.Embedding | nn.Linear)}
    assert layers == {
        "embedding": ("Embedding", 43098, 100),
        "pos_embedding": ("Embedding", 12, 100),
        "gnn.linear_edge_in": ("Linear", 100, 100, True),
        "gnn.linear_edge_out": ("Linear", 100, 100, True),
        "gnn.linear_edge_f": ("Linear", 100, 100, True),
        "linear_one": ("Linear", 100, 100, True),
        "linear_two": ("Linear", 100, 100, True),
        "linear_three": ("Linear", 100, 1, False),
        "linear_transform": ("Linear", 200, 100, True),
    }


def test_print_shows_figure_one(diginetica_model: NISER) -> None:
    text = str(diginetica_model)
    assert "(embedding): Embedding(43098, 100)" in text
    assert "(pos_embedding): Embedding(12, 100)" in text
    for name in ("linear_edge_in", "linear_edge_out", "linear_edge_f", "linear_one",
                 "linear_two"):
        assert f"({name}): Linear(in_features=100, out_features=100, bias=True)" in text
    assert "(linear_three): Linear(in_features=100, out_features=1, bias=False)" in text
    assert "(linear_transform): Linear(in_features=200, out_features=100, bias=True)" in text
    assert text.count("Linear(in_features=100, out_features=100") == 5


def test_scores_cover_every_item_and_padding_is_minus_inf_in_eval() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8).eval()
    with torch.no_grad():
        scores = model(*_graph([[1, 2, 1, 3], [4]]))
    assert scores.shape == (2, 31)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    # cosine scores scaled by sigma
    assert scores[:, 1:].abs().max() <= model.sigma + 1e-4
    assert (torch.topk(scores, 30, dim=1).indices != 0).all()


def test_padding_column_is_an_ordinary_score_in_training() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8).train()
    model.renormalize_()
    scores = model(*_graph([[1, 2, 1, 3]]))
    assert torch.isfinite(scores).all()


def test_session_and_item_embeddings_are_unit_vectors() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8).eval()
    table = model.item_table()
    torch.testing.assert_close(table.norm(dim=1), torch.ones(31))
    nodes, adj, alias, positions, mask, last = _graph([[1, 2, 1, 3], [5, 6]])
    with torch.no_grad():
        s = model.session_embedding(table, nodes, adj, alias, positions, mask, last)
    torch.testing.assert_close(s.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("fused", [False, True])
def test_item_table_cache_is_invalidated_by_an_optimizer_step(fused: bool) -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)  # training uses fused
    graph = _graph([[1, 2, 1, 3]])
    model.eval()
    before = model.item_table()
    assert model.item_table() is before  # cached while the weights are unchanged
    before = before.clone()

    model.train()
    loss = F.cross_entropy(model(*graph), torch.tensor([4]))
    opt.zero_grad()
    loss.backward()
    opt.step()

    model.eval()
    after = model.item_table()
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, F.normalize(model.embedding.weight.detach(), dim=-1))


def test_item_table_cache_is_invalidated_by_loading_weights() -> None:
    torch.manual_seed(0)
    a, b = NISER(30, dim=8).eval(), NISER(30, dim=8).eval()
    stale = a.item_table().clone()
    a.load_state_dict(b.state_dict())
    torch.testing.assert_close(a.item_table(), b.item_table())
    assert not torch.equal(a.item_table(), stale)


def test_renormalize_puts_items_on_the_unit_sphere() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8)
    with torch.no_grad():
        model.embedding.weight.mul_(3.0)
    model.renormalize_()
    torch.testing.assert_close(model.embedding.weight.norm(dim=1), torch.ones(31))


def test_eval_scores_do_not_depend_on_batch_companions() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8).eval()
    sessions = [[1, 2, 1, 3], [7], [9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 11, 12, 13, 14]]
    with torch.no_grad():
        together = model(*_graph(sessions))
        alone = torch.cat([model(*_graph([s])) for s in sessions])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = NISER(30, dim=8, dropout=0.5)
    graph = _graph([[1, 2, 1, 3]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(*graph), model(*graph))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(*graph), model(*graph))
    assert np.isclose(model.dropout.p, 0.5)
