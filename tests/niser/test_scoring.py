"""The fused loss against torch's cross-entropy, the bf16 error bound, and the tie rule: the fast
path's top-k is the float32 top-k up to float32 ties, on a small trained model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from niser import scoring
from niser.data import SessionData
from niser.graph import build_batch
from niser.model import NISER
from niser.scoring import (
    ItemScorer,
    bf16_score_bound,
    chunked_topk,
    fp32_tie,
    softmax_loss,
    tie_rule_violations,
)
from niser.synthetic import SyntheticConfig, generate
from niser.train import TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_fp32_softmax_loss_equals_cross_entropy_and_its_gradients() -> None:
    query = (16 * _unit(40, 24, seed=0)).requires_grad_()
    table = _unit(500, 24, seed=1).requires_grad_()
    targets = torch.randint(1, 500, (40,), generator=torch.Generator().manual_seed(2))
    ours = softmax_loss(query, table, targets)
    ours.backward()
    got = (query.grad, table.grad)
    query.grad = table.grad = None
    ref = F.cross_entropy(query @ table.t(), targets)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(got[0], query.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got[1], table.grad, rtol=1e-5, atol=1e-7)


def test_bf16_softmax_loss_is_close_to_the_fp32_loss_and_gradients() -> None:
    query = (16 * _unit(40, 24, seed=3)).requires_grad_()
    table = _unit(500, 24, seed=4).requires_grad_()
    targets = torch.randint(1, 500, (40,), generator=torch.Generator().manual_seed(5))
    fast = softmax_loss(query, table, targets, bf16=True)
    fast.backward()
    got = (query.grad.clone(), table.grad.clone())
    query.grad = table.grad = None
    softmax_loss(query, table, targets).backward()
    exact = F.cross_entropy(query @ table.t(), targets).item()
    # every score moves by at most the bound, so the loss by at most twice it (+ p's rounding)
    assert abs(fast.item() - exact) <= 2 * bf16_score_bound(16.0, 24) + 0.004
    for ours, ref in zip(got, (query.grad, table.grad), strict=True):
        assert (ours - ref).norm() <= 0.05 * ref.norm()


def test_bf16_scores_stay_within_the_documented_bound() -> None:
    assert bf16_score_bound(16.0, 100) == pytest.approx(0.1885, abs=1e-4)
    query = 16 * _unit(64, 100, seed=6)
    table = _unit(5000, 100, seed=7)
    fp32 = query @ table.t()
    bf16 = (query.bfloat16() @ table.bfloat16().t()).float()
    assert (bf16 - fp32).abs().max() <= bf16_score_bound(16.0, 100)


@pytest.mark.parametrize("columns", [10_001, 10_048])  # padded to chunks, and a whole number
def test_chunked_topk_equals_torch_topk_on_scores_without_ties(columns: int) -> None:
    scores = torch.randn(12, columns, generator=torch.Generator().manual_seed(8))
    assert scores.shape[0] >= scoring.CHUNKED_MIN_ROWS  # the chunked search, not the shortcut
    for k in (1, 5, 20):
        values, index = chunked_topk(scores, k, chunk=64)
        ref = torch.topk(scores, k, dim=1)
        assert torch.equal(values, ref.values) and torch.equal(index, ref.indices)


def assert_fp32_topk_up_to_ties(fp32: torch.Tensor, values: torch.Tensor, index: torch.Tensor,
                                tie: torch.Tensor) -> None:
    bad = tie_rule_violations(fp32, values, index, tie)
    assert not bad.any(), f"rows breaking the tie rule: {bad.nonzero().flatten().tolist()}"


def test_tie_rule_accepts_swapped_ties_and_refuses_every_kind_of_break() -> None:
    scores = torch.tensor([[float("-inf"), 5.0, 4.0, 4.0 + 1e-6, 1.0, 3.0]])
    tie = 1e-5

    def broken(values: list[float], index: list[int]) -> bool:
        return bool(tie_rule_violations(scores, torch.tensor([values]), torch.tensor([index]),
                                        tie)[0])

    assert not broken([5.0, 4.0, 4.0], [1, 2, 3])  # 3 ties with 2 within 1e-6: either order
    assert not broken([5.0, 4.0, 4.0], [1, 3, 2])
    assert broken([5.0, 4.0, 3.0], [1, 2, 5])  # 3 (4.0) left out for 5 (3.0): not a tie
    assert broken([4.0, 5.0, 4.0], [2, 1, 3])  # out of order
    assert broken([5.0, 4.5, 4.0], [1, 2, 3])  # a returned score that is not the item's score
    assert broken([5.0, 5.0, 4.0], [1, 1, 2])  # an item twice
    assert broken([5.0, 4.0, float("-inf")], [1, 2, 0])  # the padding row


@pytest.fixture(scope="module")
def small_trained() -> tuple[NISER, SessionData]:
    data = generate(SyntheticConfig(n_items=3000, n_sessions=3000, seed=3))
    result = train(data, TrainConfig(epochs=2, dim=32, seed=0, device="cpu"), progress=False)
    return result.model.eval(), data


def _queries(model: NISER, data: SessionData, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = data.test.subset(np.arange(n))
    g = build_batch(batch.items, batch.offsets)
    with torch.no_grad():
        query = model.query(*g.tensors())
        fp32 = model(*g.tensors())
    return query, fp32


def test_fast_path_top20_is_the_fp32_top20_up_to_fp32_ties_on_a_trained_model(
        small_trained: tuple[NISER, SessionData]) -> None:
    model, data = small_trained
    query, fp32 = _queries(model, data, 400)
    scorer = ItemScorer(model.item_table(), bf16=True)
    values, index = scorer.topk(query, 20)
    assert scorer.bf16_rows == 400 and scorer.fallback_rows == 0  # the candidates did the work
    assert 10 <= scorer.candidates / 400 <= 200  # at least k per row, far fewer than the items
    assert_fp32_topk_up_to_ties(fp32, values, index, fp32_tie(query.norm(dim=1), model.dim))
    ref = torch.topk(fp32, 20, dim=1).indices
    same = (index == ref).all(dim=1).float().mean().item()
    assert same >= 0.99, f"only {same:.1%} of rows identical to torch.topk"


def test_rows_with_more_candidates_than_the_cap_are_scored_whole_and_obey_the_tie_rule(
        small_trained: tuple[NISER, SessionData], monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = small_trained
    query, fp32 = _queries(model, data, 256)
    free = ItemScorer(model.item_table(), bf16=True)
    free.topk(query, 10)
    per_row = free.candidates / free.bf16_rows
    monkeypatch.setattr(scoring, "MAX_CANDIDATES", int(per_row))  # below about half the rows
    scorer = ItemScorer(model.item_table(), bf16=True)
    values, index = scorer.topk(query, 10)
    assert 0 < scorer.fallback_rows < 256
    assert_fp32_topk_up_to_ties(fp32, values, index, fp32_tie(query.norm(dim=1), model.dim))


def test_tie_rule_holds_where_many_items_share_one_embedding() -> None:
    table = _unit(2001, 16, seed=9)
    table[1:801] = table[1]  # 800 identical items: all tie with each other
    query = 16 * _unit(256, 16, seed=10)
    query[::2] = 16 * table[1]  # half the rows rank the duplicates first
    fp32 = query @ table.t()
    fp32[:, 0] = float("-inf")
    for bf16 in (False, True):
        scorer = ItemScorer(table, bf16=bf16)
        values, index = scorer.topk(query, 20)
        assert_fp32_topk_up_to_ties(fp32, values, index, fp32_tie(query.norm(dim=1), 16))
    assert scorer.fallback_rows == 0 and scorer.candidates >= 128 * 800  # all rescored


def test_topk_refuses_k_outside_the_catalogue() -> None:
    scorer = ItemScorer(_unit(11, 8, seed=11))
    with pytest.raises(ValueError, match="k=11"):
        scorer.topk(_unit(2, 8, seed=12), 11)
