"""Training on synthetic sessions: learns beyond POP, is deterministic, resumes exactly;
the Recommender round-trips through save/load and handles unknown items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from niser.baselines import Pop
from niser.data import SessionData
from niser.graph import build_batch, kept_lengths, length_groups
from niser.inference import Recommender, train_tiny_recommender
from niser.metrics import evaluate
from niser.synthetic import SyntheticConfig, generate
from niser.train import TrainConfig, TrainResult, train
from tests.niser.topk import compare_topk

CONFIG = TrainConfig.model_validate({"epochs": 3, "dim": 32, "seed": 0, "device": "cpu"})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Bit-for-bit repeatability is promised for a fixed thread count; one intra-op thread
    also keeps these trainings fast on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> SessionData:
    return generate(SyntheticConfig(seed=0))


@pytest.fixture(scope="module")
def trained(data: SessionData) -> TrainResult:
    return train(data, CONFIG, progress=False)


@pytest.fixture(scope="module")
def recommender(trained: TrainResult, data: SessionData) -> Recommender:
    return Recommender.from_training(trained.model, CONFIG, data)


def _state(result: TrainResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}


def test_short_training_beats_pop_clearly(trained: TrainResult, data: SessionData) -> None:
    pop = evaluate(Pop().fit(data.train, data.n_items).topk, data.test)
    model = trained.test
    assert model["recall_20"] >= pop["recall_20"] + 10.0, (model, pop)
    assert model["mrr_20"] >= pop["mrr_20"] + 5.0, (model, pop)
    losses = [h.loss for h in trained.history]
    assert losses[-1] < losses[0]


def test_seeded_training_is_deterministic(trained: TrainResult, data: SessionData) -> None:
    again = train(data, CONFIG, progress=False)
    assert [h.loss for h in again.history] == [h.loss for h in trained.history]
    assert [h.validation for h in again.history] == [h.validation for h in trained.history]
    assert again.test == trained.test and again.best_epoch == trained.best_epoch
    first, second = _state(trained), _state(again)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_other_seed_gives_other_weights(trained: TrainResult, data: SessionData) -> None:
    other = train(data, CONFIG.model_copy(update={"seed": 1, "epochs": 1}), progress=False)
    assert not torch.equal(other.model.embedding.weight, trained.model.embedding.weight)


def test_resume_from_checkpoint_equals_uninterrupted_run(
    trained: TrainResult, data: SessionData, tmp_path: Path
) -> None:
    first = train(data, CONFIG.model_copy(update={"epochs": 2}), checkpoint_dir=tmp_path,
                  progress=False)
    assert (tmp_path / "last.pt").is_file()
    assert len(first.history) == 2
    resumed = train(data, CONFIG, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [h.loss for h in resumed.history] == [h.loss for h in trained.history]
    assert resumed.final == trained.final
    straight, again = _state(trained), _state(resumed)
    for name, tensor in straight.items():
        assert torch.equal(tensor, again[name]), name


def test_save_load_round_trip_gives_identical_recommendations(
    recommender: Recommender, data: SessionData, tmp_path: Path
) -> None:
    recommender.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {
        "config.json", "weights.pt", "vocab.json", "popularity.npy"}
    loaded = Recommender.load(tmp_path / "model")
    raw = data.vocab.raw_ids
    sessions = [raw[[0, 1, 2]].tolist(), raw[[5]].tolist(), raw[[3, 3, 9, 4]].tolist()]
    assert loaded.recommend(sessions, k=20) == recommender.recommend(sessions, k=20)
    assert loaded.vocab == recommender.vocab
    np.testing.assert_array_equal(loaded.popularity, recommender.popularity)


def test_recommendations_are_raw_ids_best_first(
    recommender: Recommender, data: SessionData
) -> None:
    raw = data.vocab.raw_ids
    (rec,) = recommender.recommend([raw[[0, 1]].tolist()], k=10)
    assert len(rec.items) == len(rec.scores) == 10
    assert all(item in data.vocab for item in rec.items)
    assert rec.scores == sorted(rec.scores, reverse=True)
    assert not rec.fallback and rec.unknown_items == []
    # the same answer as the model's own top-k over item indices
    idx, _ = recommender.topk_indices(np.array([1, 2]), np.array([0, 2]), 10)
    assert rec.items == data.vocab.decode(idx[0]).tolist()


def test_a_batch_embedded_in_length_groups_ranks_as_one_batch_up_to_ties(
    recommender: Recommender, data: SessionData
) -> None:
    batch = data.test.subset(np.arange(200))
    assert len(length_groups(kept_lengths(batch.lengths, CONFIG.max_positions,
                                         CONFIG.long_sessions))) == 2
    grouped = recommender.topk_indices(batch.items, batch.offsets, 20)
    g = build_batch(batch.items, batch.offsets, CONFIG.max_positions, CONFIG.long_sessions)
    values, index = recommender.model.topk(20, *g.tensors(), bf16=recommender.precision.bf16)
    exact, problems = compare_topk(grouped[0], grouped[1], index.numpy(), values.numpy())
    assert not problems, problems[:3]
    assert exact >= 190


def test_unknown_ids_are_dropped_and_reported(
    recommender: Recommender, data: SessionData
) -> None:
    raw = data.vocab.raw_ids
    unknown = [42, 7]  # synthetic raw ids are 100000 + 7k: these are not in the vocabulary
    assert not any(u in data.vocab for u in unknown)
    mixed, clean = recommender.recommend(
        [[42, int(raw[0]), 7, int(raw[1])], [int(raw[0]), int(raw[1])]], k=20)
    assert mixed.unknown_items == [42, 7]
    assert not mixed.fallback
    assert mixed.items == clean.items
    assert mixed.scores == pytest.approx(clean.scores)


def test_all_unknown_session_falls_back_to_popular_items(
    recommender: Recommender, data: SessionData
) -> None:
    known = [int(data.vocab.raw_ids[0])]
    fallback, normal = recommender.recommend([[42, 7], known], k=5)
    assert fallback.fallback and fallback.unknown_items == [42, 7]
    pop_top = Pop().fit(data.train, data.n_items).popular[:5]
    popularity = recommender.popularity
    # the most popular items by the recommender's own counts, as raw ids
    expected = np.argsort(-popularity[1:], kind="stable")[:5] + 1
    assert fallback.items == data.vocab.decode(expected).tolist()
    assert len(set(fallback.items)) == 5
    assert set(data.vocab.decode(pop_top).tolist()) & set(fallback.items)
    assert not normal.fallback
    empty = recommender.recommend([[]], k=5)[0]
    assert empty.fallback and empty.unknown_items == []


def test_k_out_of_range_is_refused(recommender: Recommender) -> None:
    with pytest.raises(ValueError, match="k=0"):
        recommender.recommend([[1]], k=0)


def test_train_tiny_recommender_answers_raw_ids() -> None:
    rec = train_tiny_recommender(seed=0, epochs=1)
    session = rec.vocab.raw_ids[:3].tolist()
    (out,) = rec.recommend([session], k=5)
    assert len(out.items) == 5 and not out.fallback
    assert all(i in rec.vocab for i in out.items)
