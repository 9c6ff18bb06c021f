"""Session data as the model sees it: ragged prefix -> target samples over item indices 1..N.

``Samples`` keeps sessions flat (one int64 array plus offsets) so that batching never loops over
samples in Python. ``SessionData`` bundles the train and test samples (and, once carved, a
validation split) with the vocabulary that maps item indices back to raw item ids.

Validation (``carve_validation``) is carved from the training period only: the most recent
sessions of ``train`` go to ``valid`` whole, so no session has samples on both sides and the
test period is never touched. Every loader here lists training samples in augmentation order
(a session's prefixes consecutive, shortest first) and sessions in time order (SR-GNN sorts the
training sessions by date, the synthetic generator emits them in time order), so "the last
sessions" are the most recent ones. Raw click logs can instead be carved by date with
``niser.preprocess`` (``valid_span``), the test split's rule applied to the training period.

``save_prepared`` / ``load_prepared`` keep a ``SessionData`` as one ``.npz`` file (no pickle):
what a training job elsewhere (a SageMaker training job's ``train`` channel) reads back
unchanged, fingerprint included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from niser.graph import ragged_take
from niser.vocab import Vocabulary

VALID_FRACTION = 0.1  # share of training sessions carved for validation (SR-GNN's valid_portion)


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
        gather, offsets = ragged_take(self.offsets[index], self.lengths[index])
        return Samples(self.items[gather], offsets, self.targets[index])

    @classmethod
    def from_pairs(cls, prefixes: Sequence[Sequence[int]], targets: Sequence[int]) -> Samples:
        lens = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=len(prefixes))
        offsets = np.zeros(len(prefixes) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = (i for p in prefixes for i in p)
        items = np.fromiter(flat, dtype=np.int64, count=int(offsets[-1]))
        return cls(items, offsets, np.asarray(targets, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence[Samples]) -> Samples:
        """The samples of ``parts``, one after the other, as one flat ``Samples``."""
        lens = [p.offsets[-1] for p in parts]
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts,
                                                                            strict=True)])
        return cls(np.concatenate([p.items for p in parts]), offsets.astype(np.int64),
                   np.concatenate([p.targets for p in parts]))

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


def session_ids(samples: Samples) -> np.ndarray:
    """(n,) int64: the session of each sample, 0, 1, ... in order of appearance.

    Sample i continues the session of sample i - 1 exactly when its prefix is that sample's
    prefix followed by that sample's target (augmentation order); otherwise a session starts.
    """
    n = len(samples)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lens, off = samples.lengths, samples.offsets
    cont = np.zeros(n, dtype=bool)
    cont[1:] = (lens[1:] == lens[:-1] + 1) & (samples.items[off[2:] - 1] == samples.targets[:-1])
    pairs = np.flatnonzero(cont)  # candidate i: compare items of i - 1 with the head of i
    if pairs.size:
        plen = lens[pairs - 1]
        start_prev = np.repeat(off[pairs - 1], plen)
        start_cur = np.repeat(off[pairs], plen)
        within = np.arange(int(plen.sum()), dtype=np.int64) - np.repeat(np.cumsum(plen) - plen,
                                                                         plen)
        differ = samples.items[start_prev + within] != samples.items[start_cur + within]
        bad = np.bincount(np.repeat(np.arange(pairs.size), plen), weights=differ,
                          minlength=pairs.size) > 0
        cont[pairs[bad]] = False
    return np.cumsum(~cont) - 1


@dataclass(frozen=True)
class SessionData:
    """A dataset ready for training: train/test (and validation) samples, the item vocabulary.

    ``valid`` is None until a validation split is carved from the training period
    (``carve_validation`` or a loader asked for one); ``train`` then holds the fitting samples.
    """

    name: str
    train: Samples
    test: Samples
    vocab: Vocabulary
    valid: Samples | None = None

    @property
    def n_items(self) -> int:
        """N: item indices run 1..N; the model's item table has N + 1 rows (0 = padding)."""
        return len(self.vocab)

    def fingerprint(self) -> str:
        """Content hash of every split and the vocabulary (as before when ``valid`` is None)."""
        h = hashlib.sha256()
        h.update(self.train.fingerprint().encode())
        h.update(self.test.fingerprint().encode())
        h.update(self.vocab.fingerprint().encode())
        if self.valid is not None:
            h.update(b"valid" + self.valid.fingerprint().encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, str | int]:
        """Name, counts and content hash, for logging."""
        out: dict[str, str | int] = {
            "name": self.name,
            "n_items": self.n_items,
            "n_train_samples": len(self.train),
            "n_test_samples": len(self.test),
            "hash": self.fingerprint(),
        }
        if self.valid is not None:
            out["n_valid_samples"] = len(self.valid)
        return out


def carve_validation(data: SessionData, fraction: float = VALID_FRACTION) -> SessionData:
    """``data`` with the most recent ``fraction`` of its training sessions as ``valid``.

    Sessions are recovered from the augmentation order (``session_ids``) and move whole; at least
    one session stays on each side. ``data`` that already has ``valid`` is returned unchanged.
    """
    if data.valid is not None:
        return data
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    sid = session_ids(data.train)
    n_sessions = int(sid[-1]) + 1 if sid.size else 0
    if n_sessions < 2:
        raise DataError(f"{data.name}: {n_sessions} training session(s); a validation split "
                        "needs at least 2 (one to fit, one to validate)")
    n_valid = min(max(1, round(n_sessions * fraction)), n_sessions - 1)
    cut = int(np.searchsorted(sid, n_sessions - n_valid))
    index = np.arange(len(data.train), dtype=np.int64)
    return replace(data, train=data.train.subset(index[:cut]),
                   valid=data.train.subset(index[cut:]))


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


PREPARED_SUFFIX = ".npz"
_SPLITS = ("train", "test", "valid")


def save_prepared(data: SessionData, path: str | Path) -> Path:
    """Write ``data`` to ``path`` (an ``.npz`` file: every split's arrays, the vocabulary's raw
    ids and the name); ``load_prepared`` reads it back equal, fingerprint included."""
    path = Path(path)
    if path.suffix != PREPARED_SUFFIX:
        raise ValueError(f"a prepared dataset file ends in {PREPARED_SUFFIX}, got {path.name!r}")
    arrays: dict[str, Any] = {"name": np.array(data.name), "raw_ids": data.vocab.raw_ids}
    for split in _SPLITS:
        samples = getattr(data, split)
        if samples is not None:
            arrays.update({f"{split}_items": samples.items, f"{split}_offsets": samples.offsets,
                           f"{split}_targets": samples.targets})
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_prepared(path: str | Path) -> SessionData:
    """The ``SessionData`` written by ``save_prepared``; ``DataError`` naming what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a prepared dataset file ({exc})") from None
    missing = [k for k in ("name", "raw_ids", "train_items", "test_items") if k not in got]
    if missing:
        raise DataError(f"{path}: not a prepared dataset file (missing {missing})")

    def split(name: str) -> Samples | None:
        if f"{name}_items" not in got:
            return None
        return Samples(got[f"{name}_items"].astype(np.int64),
                       got[f"{name}_offsets"].astype(np.int64),
                       got[f"{name}_targets"].astype(np.int64))

    train, test = split("train"), split("test")
    assert train is not None and test is not None
    return SessionData(str(got["name"]), train, test, Vocabulary(got["raw_ids"]), split("valid"))
