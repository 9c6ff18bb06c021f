"""Request payloads drawn from real test sessions.

A benchmark that sends the same request over and over measures a cache, not a model. ``Payloads``
holds many different sessions (test prefixes converted back to RAW item ids, as a client would send
them), shuffled with a seed, and hands out batches round-robin so consecutive requests differ and
the whole pool is cycled. ``next_batch`` is safe to call from many threads at once.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import numpy as np

from niser.data import Samples
from niser.vocab import Vocabulary


class Payloads:
    """A seeded, cycling pool of request batches (``batch_size`` sessions of raw item ids each)."""

    def __init__(
        self, sessions: Sequence[Sequence[int]], batch_size: int = 1, seed: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        pool = [[int(i) for i in s] for s in sessions if len(s) > 0]
        if len(pool) < batch_size:
            raise ValueError(
                f"need at least batch_size={batch_size} non-empty sessions, got {len(pool)}; "
                "pass more sessions or a smaller batch_size"
            )
        order = np.random.default_rng(seed).permutation(len(pool))
        shuffled = [pool[i] for i in order]
        n_batches = len(shuffled) // batch_size
        self.batch_size = batch_size
        self.seed = seed
        self.batches: list[list[list[int]]] = [
            shuffled[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)
        ]
        self._counter = itertools.count()
        self._lock = threading.Lock()

    @classmethod
    def from_samples(
        cls,
        samples: Samples,
        vocab: Vocabulary,
        batch_size: int = 1,
        seed: int = 0,
        max_sessions: int | None = 10_000,
    ) -> Payloads:
        """Test prefixes of ``samples`` (item indices) as raw-id sessions.

        ``max_sessions`` (drawn with the seed, without replacement) keeps memory small for big
        test sets; ``None`` takes all of them.
        """
        n = len(samples)
        if n == 0:
            raise ValueError("samples is empty: no sessions to draw payloads from")
        rng = np.random.default_rng(seed)
        index = (
            np.arange(n)
            if max_sessions is None or max_sessions >= n
            else np.sort(rng.choice(n, size=max_sessions, replace=False))
        )
        sub = samples.subset(index)
        raw = vocab.decode(sub.items)  # flat raw ids, aligned with sub.items
        sessions = [
            raw[sub.offsets[i] : sub.offsets[i + 1]].tolist() for i in range(len(sub))
        ]
        return cls(sessions, batch_size=batch_size, seed=seed)

    def __len__(self) -> int:
        """Number of distinct batches in one cycle."""
        return len(self.batches)

    def next_batch(self) -> list[list[int]]:
        """The next batch, round-robin over the shuffled pool (thread-safe)."""
        with self._lock:
            i = next(self._counter)
        return self.batches[i % len(self.batches)]
