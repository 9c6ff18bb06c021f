"""Session data as the model sees it: ragged prefix -> target samples over item indices 1..N.

``Samples`` keeps sessions flat (one int64 array plus offsets) so that batching never loops over
samples in Python. ``SessionData`` bundles the train and test samples with the vocabulary that
maps item indices back to raw item ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from niser.vocab import Vocabulary


class DataError(ValueError):
    """Malformed input data, or nothing left after preprocessing."""


@dataclass(frozen=True)
class Samples:
    """Ragged prefix -> target samples. Sample ``i`` is ``items[offsets[i]:offsets[i+1]]``."""

    items: np.ndarray  # (total_clicks,) int64, item indices >= 1
    offsets: np.ndarray  # (n + 1,) int64
    targets: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, i: int) -> list[int]:
        return self.items[self.offsets[i] : self.offsets[i + 1]].tolist()

    def sessions(self) -> list[list[int]]:
        return [self.session(i) for i in range(len(self))]

    def subset(self, index: np.ndarray) -> Samples:
        """The samples at ``index`` (any order), as a new flat ``Samples``."""
        index = np.asarray(index, dtype=np.int64)
        starts, lens = self.offsets[index], self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        return Samples(self.items[gather], offsets, self.targets[index])

    @classmethod
    def from_pairs(cls, prefixes: Sequence[Sequence[int]], targets: Sequence[int]) -> Samples:
        lens = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=len(prefixes))
        offsets = np.zeros(len(prefixes) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = (i for p in prefixes for i in p)
        items = np.fromiter(flat, dtype=np.int64, count=int(offsets[-1]))
        return cls(items, offsets, np.asarray(targets, dtype=np.int64))

    def fingerprint(self) -> str:
        """Content hash (sha256, first 16 hex digits) of items, offsets and targets."""
        h = hashlib.sha256()
        for arr in (self.items, self.offsets, self.targets):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def augment_prefixes(sessions: Sequence[Sequence[int]]) -> Samples:
    """Sequence augmentation: ``a b c d`` -> ``a->b``, ``a b->c``, ``a b c->d`` (SR-GNN order)."""
    prefixes: list[Sequence[int]] = []
    targets: list[int] = []
    for s in sessions:
        for j in range(1, len(s)):
            prefixes.append(s[:j])
            targets.append(s[j])
    return Samples.from_pairs(prefixes, targets)


@dataclass(frozen=True)
class SessionData:
    """A dataset ready for training: train/test samples, the item vocabulary, provenance."""

    name: str
    train: Samples
    test: Samples
    vocab: Vocabulary

    @property
    def n_items(self) -> int:
        """N: item indices run 1..N; the model's item table has N + 1 rows (0 = padding)."""
        return len(self.vocab)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.train.fingerprint().encode())
        h.update(self.test.fingerprint().encode())
        h.update(self.vocab.fingerprint().encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, str | int]:
        """Name, counts and content hash, for logging."""
        return {
            "name": self.name,
            "n_items": self.n_items,
            "n_train_samples": len(self.train),
            "n_test_samples": len(self.test),
            "hash": self.fingerprint(),
        }


def _parse_ids(text: str, path: Path, lineno: int) -> list[int]:
    out = []
    for tok in text.split():
        if not (tok.isascii() and tok.isdigit()) or int(tok) < 1:
            raise DataError(f"{path}:{lineno}: item id {tok!r} is not a positive integer")
        out.append(int(tok))
    return out


def load_preprocessed(folder: str | Path, name: str | None = None) -> SessionData:
    """Load the SR-GNN/NISER preprocessed split: ``train_sessions.txt`` and ``test.tsv``.

    Items are already indexed 1..N; the vocabulary maps each index to itself as raw id.
    """
    folder = Path(folder)
    train_path, test_path = folder / "train_sessions.txt", folder / "test.tsv"
    for p in (train_path, test_path):
        if not p.is_file():
            raise DataError(f"{p}: file not found (expected train_sessions.txt and test.tsv)")
    sessions: list[list[int]] = []
    with train_path.open() as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                sessions.append(_parse_ids(line, train_path, lineno))
    prefixes: list[list[int]] = []
    targets: list[int] = []
    with test_path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise DataError(
                    f"{test_path}:{lineno}: expected 'prefix<TAB>target', got {len(parts)} fields"
                )
            prefix = _parse_ids(parts[0], test_path, lineno)
            target = _parse_ids(parts[1], test_path, lineno)
            if not prefix or len(target) != 1:
                raise DataError(f"{test_path}:{lineno}: empty prefix or not exactly one target")
            prefixes.append(prefix)
            targets.append(target[0])
    if not sessions:
        raise DataError(f"{train_path}: no sessions")
    if not prefixes:
        raise DataError(f"{test_path}: no test samples")
    train = augment_prefixes(sessions)
    if len(train) == 0:
        raise DataError(f"{train_path}: no training samples (every session has fewer than 2 items)")
    test = Samples.from_pairs(prefixes, targets)
    n = int(max(train.items.max(), train.targets.max(), test.items.max(), test.targets.max()))
    return SessionData(name or folder.name, train, test, Vocabulary.identity(n))
