"""Model selection without peeking: the epoch is chosen on validation Recall@20, training stops
after ``patience`` epochs without a better one, the chosen weights come back, and the test set is
evaluated exactly once, after training."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from niser import train as train_module
from niser.data import Samples, SessionData
from niser.model import NISER
from niser.synthetic import SyntheticConfig, generate
from niser.train import TrainConfig, TrainResult, _Selection, train

CONFIG = TrainConfig(epochs=6, dim=8, seed=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> SessionData:
    return generate(SyntheticConfig(n_items=60, n_sessions=300, seed=4))


class Scripted:
    """Stands in for ``niser.train.evaluate``: validation Recall@20 follows ``script``; records
    every call (which split, in order) and the model's weights at each validation."""

    def __init__(self, data: SessionData, script: list[float]) -> None:
        self.data, self.script = data, script
        self.calls: list[str] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.model: NISER | None = None

    def build_model(self, n_items: int, config: TrainConfig) -> NISER:
        self.model = NISER(n_items, config.dim, config.max_positions, config.sigma,
                           config.dropout, config.gnn_steps)
        return self.model

    def evaluate(self, fn: Callable[..., Any], samples: Samples, *args: Any, **kwargs: Any
                 ) -> dict[str, float]:
        if samples is self.data.test:
            self.calls.append("test")
            return {"recall_20": -1.0, "mrr_20": -1.0, "recall_10": -1.0, "mrr_10": -1.0}
        assert self.model is not None
        self.snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        value = self.script[len(self.calls)]
        self.calls.append("valid")
        return {"recall_20": value, "mrr_20": value / 3, "recall_10": value / 2,
                "mrr_10": value / 4}


def _run(monkeypatch: pytest.MonkeyPatch, data: SessionData, script: list[float],
         config: TrainConfig = CONFIG, **kwargs: Any) -> tuple[TrainResult, Scripted]:
    fake = Scripted(data, script)
    monkeypatch.setattr(train_module, "evaluate", fake.evaluate)
    monkeypatch.setattr(train_module, "build_model", fake.build_model)
    return train(data, config, progress=False, **kwargs), fake


def test_patience_1_stops_at_the_first_epoch_that_does_not_improve(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, fake = _run(monkeypatch, data, [10.0, 12.0, 12.0, 15.0, 16.0, 17.0],
                        CONFIG.model_copy(update={"patience": 1}))
    assert [h.epoch for h in result.history] == [1, 2, 3]  # 12.0 again is not better: stop
    assert fake.calls == ["valid", "valid", "valid", "test"]
    assert result.stopped_early and result.best_epoch == 2
    assert result.validation["recall_20"] == 12.0


def test_patience_counts_epochs_in_a_row_without_a_better_score(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, _ = _run(monkeypatch, data, [10.0, 9.0, 11.0, 10.0, 10.5, 10.9],
                     CONFIG.model_copy(update={"patience": 2}))
    assert len(result.history) == 5 and result.best_epoch == 3 and result.stopped_early


def test_without_a_stop_all_epochs_run_and_the_best_one_is_chosen(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, _ = _run(monkeypatch, data, [10.0, 14.0, 11.0, 13.0, 12.0, 13.5],
                     CONFIG.model_copy(update={"patience": 6}))
    assert len(result.history) == 6 and not result.stopped_early and result.best_epoch == 2
    assert result.final["val_recall_20"] == 14.0 and result.final["best_epoch"] == 2.0


def test_the_chosen_epochs_weights_are_the_ones_returned(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, fake = _run(monkeypatch, data, [10.0, 14.0, 11.0, 13.0],
                        CONFIG.model_copy(update={"epochs": 4}))
    state = result.model.state_dict()
    chosen, last = fake.snapshots[1], fake.snapshots[3]
    for name, tensor in state.items():
        assert torch.equal(tensor, chosen[name]), name
    assert not torch.equal(state["embedding.weight"], last["embedding.weight"])


def test_the_test_set_is_evaluated_once_after_every_validation(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, fake = _run(monkeypatch, data, [10.0, 14.0, 11.0, 13.0, 12.0, 13.5],
                        CONFIG.model_copy(update={"patience": 6}))
    assert fake.calls == ["valid"] * 6 + ["test"]
    assert result.test["recall_20"] == -1.0  # what the one test evaluation returned


def test_a_run_resumed_after_an_early_stop_trains_no_further(
        monkeypatch: pytest.MonkeyPatch, data: SessionData, tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"patience": 1})
    first, _ = _run(monkeypatch, data, [10.0, 9.0, 20.0], config, checkpoint_dir=tmp_path)
    again, fake = _run(monkeypatch, data, [], config, checkpoint_dir=tmp_path, resume=True)
    assert len(again.history) == 2 and again.best_epoch == first.best_epoch == 1
    assert fake.calls == ["test"]
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name


def test_a_tie_is_not_an_improvement() -> None:
    model = NISER(5, dim=4)
    sel = _Selection()
    for epoch, value in enumerate([1.0, 2.0, 2.0, 2.0], start=1):
        sel.update(epoch, value, model, patience=2)
    assert (sel.best_epoch, sel.since_best, sel.stopped) == (2, 2, True)


def test_refit_trains_the_chosen_epoch_count_again_on_every_training_sample(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    config = CONFIG.model_copy(update={"epochs": 4, "refit": True, "patience": 4})
    result, fake = _run(monkeypatch, data, [10.0, 14.0, 11.0, 13.0], config)
    assert result.best_epoch == 2 and len(result.history) == 4
    assert [h.epoch for h in result.refit_history] == [1, 2]
    fitted = result.split["n_fit_samples"]
    every = int(fitted) + int(result.split["n_valid_samples"])
    assert all(h.samples_per_second * h.train_seconds == pytest.approx(every)
               for h in result.refit_history)
    assert fake.calls == ["valid"] * 4 + ["test"]  # the refit model is tested, once
    assert result.model is fake.model  # the model built last: the refit one
    chosen = fake.snapshots[1]
    assert not torch.equal(result.model.state_dict()["embedding.weight"],
                           chosen["embedding.weight"])
    assert result.final["val_recall_20"] == 14.0  # the selection run's validation figure


def test_without_refit_no_epoch_is_trained_again(
        monkeypatch: pytest.MonkeyPatch, data: SessionData) -> None:
    result, _ = _run(monkeypatch, data, [10.0, 14.0, 11.0, 13.0],
                     CONFIG.model_copy(update={"epochs": 4}))
    assert result.refit_history == []
