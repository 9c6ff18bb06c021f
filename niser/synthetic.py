"""A seeded synthetic session generator with learnable sequential structure.

Items have long-tail (Zipf) popularity. Each item has a few likely successors, drawn with a bias
towards popular items and weighted 1/2, 1/4, 1/8, ... (normalised), so the first successor is
the most likely next click. A session starts at an item drawn by popularity, then at each click
either jumps to an item drawn by popularity (``jump_probability``) or moves to a successor of the
current item. Lengths are 1 + geometric with mean ``mean_length``, capped at ``max_length`` (so at
least 2). Sessions are generated in time order; the last ``test_fraction`` of them are the test
set. Raw item ids are ``100000 + 7 * k`` for a shuffled k, so raw ids never equal indices.

The result goes through the same indexing, test filtering and prefix expansion as the real logs
(``niser.preprocess.index_sessions``) and is deterministic for a given configuration.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from niser.bounds import AtMost
from niser.data import SessionData
from niser.preprocess import index_sessions

RAW_ID_BASE, RAW_ID_STEP = 100_000, 7
MAX_ITEMS = 1_000_000  # 25x Diginetica's 43k items; the model's embeddings grow with it
MAX_SESSIONS = 10_000_000  # Yoochoose 1/4 has 6M training sessions
MAX_LENGTH = 1000
MAX_CLICK_CELLS = 100_000_000
"""The generator holds an int64 matrix of n_sessions x longest session (plus temporaries of its
column size): at most this many cells, 800 MB."""


class SyntheticConfig(BaseModel):
    """Parameters of the generator; the defaults train one NISER epoch in seconds on a CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_items: Annotated[int, AtMost(MAX_ITEMS, "25x Diginetica's 43k items; the model's item "
                                   "embeddings grow with the catalogue")] = Field(
        default=500, ge=2, description="Number of items in the catalogue.")
    n_sessions: Annotated[int, AtMost(MAX_SESSIONS, "more sessions than Yoochoose 1/4's "
                                      "6M; generated in memory")] = Field(
        default=4000, ge=10, description="Number of sessions, train and test together."
    )
    mean_length: float = Field(
        default=5.0, gt=2.0, le=MAX_LENGTH,
        description="Mean session length in clicks, before the cap."
    )
    max_length: Annotated[int, AtMost(MAX_LENGTH, "real sessions are tens of clicks")] = Field(
        default=30, ge=2, description="Longest session, in clicks.")
    successors_per_item: int = Field(
        default=4, ge=1, le=64,
        description="Number of likely successors of each item, weighted 1/2, 1/4, ...",
    )
    jump_probability: float = Field(
        default=0.15, ge=0.0, le=1.0,
        description="Probability that a click jumps to an item drawn by popularity instead of "
        "following a successor of the current item.",
    )
    zipf_exponent: float = Field(
        default=1.0, ge=0.0,
        description="Exponent s: the popularity of the item of rank r is proportional to r ** -s.",
    )
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Fraction of the sessions, the most recent ones, that form the test set.",
    )
    seed: int = Field(default=0, description="Seed of the random generator; same seed, same data.")

    @model_validator(mode="after")
    def _successors_fit(self) -> SyntheticConfig:
        if self.successors_per_item >= self.n_items:
            raise ValueError(
                f"successors_per_item ({self.successors_per_item}) must be below n_items "
                f"({self.n_items})"
            )
        cells = self.n_sessions * self.max_length
        if cells > MAX_CLICK_CELLS:
            raise ValueError(
                f"n_sessions x max_length = {self.n_sessions:,} x {self.max_length} = {cells:,} "
                f"is above the limit of {MAX_CLICK_CELLS:,}: the generator holds an int64 "
                f"matrix of that many clicks ({MAX_CLICK_CELLS * 8 // 10**6:,} MB at the limit); "
                "lower n_sessions or max_length")
        return self

    def digest(self) -> str:
        """First 8 hex digits of the sha256 of the configuration's JSON."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: indices into ``cum`` (a cumulative distribution) for uniforms ``u``."""
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


def generate_sessions(config: SyntheticConfig) -> list[np.ndarray]:
    """The sessions, as arrays of raw item ids, in time order."""
    c = config
    rng = np.random.default_rng(c.seed)
    n, k, s = c.n_items, c.successors_per_item, c.n_sessions
    popularity = np.arange(1, n + 1, dtype=np.float64) ** -c.zipf_exponent
    cum_pop = np.cumsum(popularity)
    # successors biased towards popular items, but less than clicks are (square root)
    successors = _draw(np.cumsum(np.sqrt(popularity)), rng.random((n, k)))
    self_loop = successors == np.arange(n)[:, None]
    successors[self_loop] = (successors[self_loop] + 1) % n
    cum_weights = np.cumsum(0.5 ** np.arange(1, k + 1))

    lengths = np.minimum(rng.geometric(1.0 / (c.mean_length - 1.0), size=s) + 1, c.max_length)
    width = int(lengths.max())
    clicks = np.empty((s, width), dtype=np.int64)
    clicks[:, 0] = _draw(cum_pop, rng.random(s))
    for t in range(1, width):
        follow = successors[clicks[:, t - 1], _draw(cum_weights, rng.random(s))]
        jump = _draw(cum_pop, rng.random(s))
        clicks[:, t] = np.where(rng.random(s) < c.jump_probability, jump, follow)

    raw_ids = RAW_ID_BASE + RAW_ID_STEP * rng.permutation(n).astype(np.int64)
    return [raw_ids[clicks[i, : lengths[i]]] for i in range(s)]


def _flat(sessions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in sessions), dtype=np.int64, count=len(sessions))
    return np.concatenate(sessions), np.repeat(np.arange(len(sessions), dtype=np.int64), lengths)


def generate(config: SyntheticConfig | None = None) -> SessionData:
    """A ``SessionData`` named ``synthetic`` (default config) or ``synthetic-<config digest>``."""
    config = config or SyntheticConfig()
    sessions = generate_sessions(config)
    n_test = max(1, round(len(sessions) * config.test_fraction))
    name = "synthetic" if config == SyntheticConfig() else f"synthetic-{config.digest()}"
    data, _ = index_sessions(
        _flat(sessions[:-n_test]), _flat(sessions[-n_test:]), name=name,
        source=f"synthetic generator {config.model_dump()}",
    )
    return data
