"""Raw item id <-> item index. Index 0 is padding; indices 1..N map to raw ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EncodedBatch:
    """Sessions of raw ids as ragged item indices, keeping only sessions with a known item."""

    flat: np.ndarray  # (total,) int64 item indices of the kept sessions
    offsets: np.ndarray  # (len(rows) + 1,) int64
    rows: list[int]  # position in the request of each kept session
    unknown: list[list[int]]  # per request session: raw ids not in the vocabulary


class Vocabulary:
    """Maps raw item ids (positive ints) to indices 1..N and back."""

    def __init__(self, raw_ids: Sequence[int] | np.ndarray) -> None:
        self.raw_ids = np.asarray(raw_ids, dtype=np.int64)  # (N,): index i + 1 -> raw_ids[i]
        if self.raw_ids.ndim != 1:
            raise ValueError("raw_ids must be one-dimensional")
        if len(np.unique(self.raw_ids)) != len(self.raw_ids):
            raise ValueError("raw_ids contains duplicates")
        self._index = {int(r): i + 1 for i, r in enumerate(self.raw_ids.tolist())}

    @classmethod
    def identity(cls, n: int) -> Vocabulary:
        """Raw id == index, for data already indexed 1..n."""
        return cls(np.arange(1, n + 1, dtype=np.int64))

    @classmethod
    def from_sessions(cls, sessions: Iterable[Sequence[int]]) -> Vocabulary:
        """Index raw ids in order of first appearance."""
        seen: dict[int, None] = {}
        for s in sessions:
            for r in s:
                seen.setdefault(int(r), None)
        return cls(list(seen))

    def __len__(self) -> int:
        return int(self.raw_ids.shape[0])

    def __contains__(self, raw_id: object) -> bool:
        return raw_id in self._index

    def index(self, raw_id: int) -> int:
        """Index of ``raw_id``; ``KeyError`` if unknown."""
        return self._index[int(raw_id)]

    def encode(self, raw: Sequence[int]) -> tuple[list[int], list[int]]:
        """Known indices in order, and the raw ids that are not in the vocabulary."""
        known: list[int] = []
        unknown: list[int] = []
        for r in raw:
            i = self._index.get(int(r))
            if i is None:
                unknown.append(int(r))
            else:
                known.append(i)
        return known, unknown

    def encode_batch(self, sessions: Sequence[Sequence[int]]) -> EncodedBatch:
        """Encode many sessions at once; sessions with no known item are left out of ``flat``."""
        encoded = [self.encode(s) for s in sessions]
        rows = [i for i, (known, _) in enumerate(encoded) if known]
        lens = np.array([len(encoded[i][0]) for i in rows], dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.fromiter((x for i in rows for x in encoded[i][0]), dtype=np.int64,
                           count=int(offsets[-1]))
        return EncodedBatch(flat, offsets, rows, [unknown for _, unknown in encoded])

    def decode(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw ids for indices 1..N (any shape)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 1 or idx.max() > len(self)):
            raise IndexError(f"item index outside 1..{len(self)}")
        return self.raw_ids[idx - 1]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw_ids.tobytes()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"raw_ids": self.raw_ids.tolist()}))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(json.loads(Path(path).read_text())["raw_ids"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self.raw_ids, other.raw_ids)

    def __hash__(self) -> int:
        return hash(self.fingerprint())
