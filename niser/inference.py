"""Inference on a trained NISER: raw item ids in, top-k raw item ids and scores out.

A ``Recommender`` bundles the model, its vocabulary and item popularity (the fallback for
sessions with no known item). Its top-k is the model's float32 top-k (``NISER.topk``); on the
bf16 path (``TrainConfig.precision``, decided for the device it runs on: ``niser.precision``)
requests of at least ``niser.scoring.BF16_MIN_ROWS`` sessions take their candidates from a bf16
product (see ``niser.scoring``). ``save``/``load`` use a plain directory::

    config.json      TrainConfig and n_items
    weights.pt       model state dict
    vocab.json       raw ids of indices 1..N
    popularity.npy   (N + 1,) click counts in training
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from niser.data import Samples, SessionData
from niser.graph import build_batch, kept_lengths, length_groups, ragged_take
from niser.model import NISER
from niser.precision import PrecisionChoice, choose_precision
from niser.train import TrainConfig, build_model
from niser.vocab import Vocabulary


@dataclass(frozen=True)
class Recommendation:
    """One session's answer."""

    items: list[int]  # top-k raw item ids, best first
    scores: list[float]
    unknown_items: list[int]  # raw ids the vocabulary does not know (dropped from the session)
    fallback: bool  # True when no known item remained: items are the most popular ones


def item_popularity(train: Samples, n_items: int) -> np.ndarray:
    """Clicks per item index in the training samples (prefix items and targets)."""
    counts = np.bincount(train.items, minlength=n_items + 1)
    counts += np.bincount(train.targets, minlength=n_items + 1)
    return counts.astype(np.int64)


class Recommender:
    """A trained model ready to answer ``recommend(sessions, k)`` in raw item ids."""

    def __init__(self, model: NISER, config: TrainConfig, vocab: Vocabulary,
                 popularity: np.ndarray) -> None:
        if len(vocab) != model.n_items:
            raise ValueError(f"vocabulary has {len(vocab)} items, model has {model.n_items}")
        self.model = model.eval()
        self.config = config
        self.vocab = vocab
        self.popularity = popularity
        pop = popularity.astype(np.float64).copy()
        pop[0] = -1.0  # never recommend padding
        self._popular = np.argsort(-pop, kind="stable")
        self._pop_scores = pop / max(pop.sum(), 1.0)

    @classmethod
    def from_training(cls, model: NISER, config: TrainConfig, data: SessionData) -> Recommender:
        return cls(model.cpu(), config, data.vocab, item_popularity(data.train, data.n_items))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision(self) -> PrecisionChoice:
        """The scoring path on the model's current device, and why."""
        return choose_precision(self.config.precision, self.device)

    def topk_indices(self, items: np.ndarray, offsets: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and float32 scores (B, k) for ragged sessions of known indices."""
        values, index = self.model.scorer(self.precision.bf16).topk(self.queries(items, offsets), k)
        return index.cpu().numpy(), values.cpu().numpy()

    def queries(self, items: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        """The model's queries (B, d) for ragged sessions of known indices (``NISER.query``).

        A batch of mixed lengths is embedded in two groups of similar length
        (``niser.graph.length_groups``: less padding)."""
        cfg = self.config
        lengths = np.diff(offsets)
        groups = length_groups(kept_lengths(lengths, cfg.max_positions, cfg.long_sessions))
        if len(groups) == 1:
            g = build_batch(items, offsets, cfg.max_positions, cfg.long_sessions)
            return self.model.query(*g.tensors(self.device))
        parts = []
        for rows in groups:
            gather, sub = ragged_take(offsets[rows], lengths[rows])
            g = build_batch(items[gather], sub, cfg.max_positions, cfg.long_sessions)
            parts.append(self.model.query(*g.tensors(self.device)))
        query = torch.empty((lengths.size, parts[0].shape[1]), dtype=parts[0].dtype,
                            device=parts[0].device)
        query[torch.from_numpy(np.concatenate(groups)).to(query.device)] = torch.cat(parts)
        return query

    def recommend(self, sessions: Sequence[Sequence[int]], k: int = 20) -> list[Recommendation]:
        """Top-k raw item ids per session. Unknown ids are dropped and reported; a session with
        no known item gets the most popular items, flagged as a fallback."""
        if not 1 <= k <= self.model.n_items:
            raise ValueError(f"k={k} must be between 1 and the number of items "
                             f"({self.model.n_items})")
        batch = self.vocab.encode_batch(sessions)
        out: list[Recommendation | None] = [None] * len(sessions)
        if batch.rows:
            idx, val = self.topk_indices(batch.flat, batch.offsets, k)
            raw, scores = self.vocab.decode(idx).tolist(), val.tolist()
            for row, i in enumerate(batch.rows):
                out[i] = Recommendation(raw[row], scores[row], batch.unknown[i], False)
        pop_idx = self._popular[:k]
        pop_raw = self.vocab.decode(pop_idx).tolist()
        pop_val = self._pop_scores[pop_idx].tolist()
        return [r if r is not None else Recommendation(pop_raw, pop_val, batch.unknown[i], True)
                for i, r in enumerate(out)]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(
            {"train_config": self.config.model_dump(), "n_items": self.model.n_items}, indent=2))
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, path / "weights.pt")
        self.vocab.save(path / "vocab.json")
        np.save(path / "popularity.npy", self.popularity)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recommender:
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        config = TrainConfig(**meta["train_config"])
        model = build_model(int(meta["n_items"]), config)
        model.load_state_dict(torch.load(path / "weights.pt", map_location=device,
                                         weights_only=True))
        return cls(model.to(device).eval(), config, Vocabulary.load(path / "vocab.json"),
                   np.load(path / "popularity.npy"))


def train_tiny_recommender(seed: int = 0, epochs: int = 2) -> Recommender:
    """A small model trained in seconds on the default synthetic data (for tests and demos)."""
    from niser.synthetic import SyntheticConfig, generate
    from niser.train import train

    data = generate(SyntheticConfig(seed=seed))
    config = TrainConfig(epochs=epochs, dim=32, seed=seed, device="cpu")
    result = train(data, config, progress=False)
    return Recommender.from_training(result.model, config, data)
