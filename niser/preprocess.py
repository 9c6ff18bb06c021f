"""The SR-GNN / NISER preprocessing: from a click log to ``SessionData``.

``preprocess_clicks`` applies, in this order, and counts what survives each step in a
``PreprocessReport``:

1. order the clicks of each session by the given key (stable: ties keep file order);
2. drop sessions with a single click;
3. drop clicks on items with fewer than ``min_item_clicks`` clicks, counted over all sessions
   still left (train and test periods alike);
4. drop sessions left with fewer than 2 clicks;
5. split by session date, the date of the session's last row in file order:
   ``split = latest session date - test_span``; sessions dated before ``split`` train, those dated
   after it test. A session dated exactly at ``split`` belongs to neither (SR-GNN's convention: with
   day-resolution Diginetica dates, the day before the 7 test days is left out);
   With ``valid_span`` the same rule splits the training period again:
   ``valid_split = latest training session date - valid_span``; training sessions dated after it
   are the validation set, those before it are fitted on, and one dated exactly at it belongs
   to neither (so validation relates to fitting as test relates to training);
6. optionally keep only the most recent ``len // fraction`` training (fitting) sessions
   (Yoochoose 1/64, 1/4);
7. index items 1..N in order of first appearance in the training sessions sorted by date (ties by
   first appearance in the file); 0 stays free for padding;
8. drop test (and validation) clicks on items outside that vocabulary, then sessions left with
   < 2 clicks;
9. expand every train, validation and test session of length L into its L - 1 prefix -> target
   samples.

Any step that leaves no session raises ``DataError`` naming that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from niser.data import DataError, SessionData, augment_prefixes
from niser.vocab import Vocabulary


@dataclass(frozen=True)
class Stage:
    """What is left after one preprocessing step."""

    name: str
    sessions: int
    clicks: int
    items: int


@dataclass(frozen=True)
class PreprocessReport:
    """The survivors of every step, and the split date, for logging and tests."""

    source: str
    stages: tuple[Stage, ...]
    split_date: str
    valid_split_date: str = ""  # empty when no validation split was carved

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; ``KeyError`` listing the stage names if there is none."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def as_dict(self) -> dict[str, int | str]:
        """Flat ``{"<stage>/sessions": n, ...}`` plus ``split_date``, for MLflow params."""
        out: dict[str, int | str] = {"split_date": self.split_date}
        if self.valid_split_date:
            out["valid_split_date"] = self.valid_split_date
        for s in self.stages:
            out[f"{s.name}/sessions"] = s.sessions
            out[f"{s.name}/clicks"] = s.clicks
            out[f"{s.name}/items"] = s.items
        return out


@dataclass(frozen=True)
class Preprocessed:
    """A preprocessed dataset and the report of how it was made."""

    data: SessionData
    report: PreprocessReport


def _stage(name: str, session_of_click: np.ndarray, items: np.ndarray, source: str) -> Stage:
    stage = Stage(
        name,
        sessions=int(pd.unique(session_of_click).size),
        clicks=int(items.size),
        items=int(pd.unique(items).size),
    )
    if stage.sessions == 0:
        raise DataError(f"{source}: no session left after step {name!r}")
    return stage


def _gather(codes: np.ndarray, items: np.ndarray, sessions: np.ndarray, n_codes: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """Clicks of ``sessions`` (session codes, in the wanted order), flat, and per-click rank."""
    rank = np.full(n_codes, -1, dtype=np.int64)
    rank[sessions] = np.arange(len(sessions), dtype=np.int64)
    r = rank[codes]
    keep = r >= 0
    r, kept = r[keep], items[keep]
    order = np.argsort(r, kind="stable")  # clicks arrive sorted by session code, then click order
    return kept[order], r[order]


def _to_sessions(items: np.ndarray, session_rank: np.ndarray) -> list[list[int]]:
    """Flat clicks grouped by consecutive ``session_rank`` -> one list per session."""
    if items.size == 0:
        return []
    bounds = np.flatnonzero(np.diff(session_rank)) + 1
    return [s.tolist() for s in np.split(items, bounds)]


def _known_sessions(split: str, items: np.ndarray, rank: np.ndarray, lookup: pd.Index,
                    source: str) -> tuple[list[list[int]], list[Stage]]:
    """Step 8 on one held-out split: its sessions as item indices, and the two stages."""
    idx = lookup.get_indexer(items) + 1
    known = idx > 0
    idx, rank = idx[known], rank[known]
    stages = [_stage(f"{split}: drop clicks on items unseen in training", rank, idx, source)]
    lens = np.bincount(rank, minlength=int(rank.max(initial=-1)) + 1)
    long_enough = lens[rank] >= 2
    idx, rank = idx[long_enough], rank[long_enough]
    stages.append(_stage(f"{split}: drop sessions left with < 2 clicks", rank, idx, source))
    return _to_sessions(idx, rank), stages


def index_sessions(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    name: str,
    source: str,
    vocab_from: np.ndarray | None = None,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[SessionData, list[Stage]]:
    """Steps 7-9 on flat ``(raw item ids, session rank per click)`` train and test clicks.

    ``vocab_from`` (raw ids, in order) defaults to the training clicks. ``valid`` clicks, when
    given, are filtered like the test clicks and become ``SessionData.valid``. Sessions must be
    contiguous and in time order. Returns the data and the stages of the held-out filters.
    """
    train_items, train_rank = train
    _, raw_ids = pd.factorize(train_items if vocab_from is None else vocab_from, sort=False)
    vocab = Vocabulary(np.asarray(raw_ids, dtype=np.int64))
    lookup = pd.Index(vocab.raw_ids)
    train_idx = lookup.get_indexer(train_items) + 1
    stages: list[Stage] = []
    held_out: dict[str, list[list[int]]] = {}
    for split, clicks in (("valid", valid), ("test", test)):
        if clicks is not None:
            held_out[split], more = _known_sessions(split, *clicks, lookup, source)
            stages += more
    data = SessionData(
        name,
        augment_prefixes(_to_sessions(train_idx, train_rank)),
        augment_prefixes(held_out["test"]),
        vocab,
        augment_prefixes(held_out["valid"]) if valid is not None else None,
    )
    return data, stages


def preprocess_clicks(
    clicks: pd.DataFrame,
    *,
    source: str,
    name: str,
    test_span: np.timedelta64,
    min_item_clicks: int = 5,
    fraction: int = 1,
    vocab_scope: Literal["train", "fraction"] = "train",
    valid_span: np.timedelta64 | None = None,
) -> Preprocessed:
    """Run the steps of the module docstring on ``clicks`` (rows in file order).

    ``clicks`` has integer columns ``session_id``, ``item_id``, a sortable ``order`` (click order
    within a session) and a datetime64 ``date``. ``fraction`` d keeps the most recent
    ``len(train) // d`` training sessions. ``vocab_scope="train"`` (SR-GNN's choice, which keeps the
    published Yoochoose test sets) builds the vocabulary and filters the test set over the whole
    training period; ``"fraction"`` uses only the kept training sessions. ``valid_span`` carves
    the validation set of step 5 (None: no validation split).
    """
    if fraction < 1:
        raise ValueError(
            f"fraction must be a positive integer denominator (64 for 1/64), got {fraction}"
        )
    codes, _ = pd.factorize(clicks["session_id"].to_numpy(), sort=False)  # first-appearance order
    n_codes = int(codes.max(initial=-1)) + 1
    dates = clicks["date"].to_numpy().astype("datetime64[s]")
    session_date = pd.Series(dates).groupby(codes, sort=True).last().to_numpy()
    order = np.lexsort((clicks["order"].to_numpy(), codes))  # stable: ties keep file order
    codes, items = codes[order], clicks["item_id"].to_numpy(dtype=np.int64)[order]
    stages = [_stage("raw", codes, items, source)]

    lens = np.bincount(codes, minlength=n_codes)
    keep = lens[codes] >= 2
    codes, items = codes[keep], items[keep]
    stages.append(_stage("drop single-click sessions", codes, items, source))

    item_codes, _ = pd.factorize(items, sort=False)
    keep = np.bincount(item_codes)[item_codes] >= min_item_clicks
    codes, items = codes[keep], items[keep]
    stages.append(_stage(f"drop items with < {min_item_clicks} clicks", codes, items, source))

    lens = np.bincount(codes, minlength=n_codes)
    keep = lens[codes] >= 2
    codes, items = codes[keep], items[keep]
    stages.append(_stage("drop sessions left with < 2 clicks", codes, items, source))

    present = np.flatnonzero(np.bincount(codes, minlength=n_codes))
    split = session_date[present].max() - test_span
    by_date = present[np.argsort(session_date[present], kind="stable")]
    train_sessions = by_date[session_date[by_date] < split]
    test_sessions = by_date[session_date[by_date] > split]
    full_train = _gather(codes, items, train_sessions, n_codes)
    stages.append(_stage("train period", full_train[1], full_train[0], source))
    test = _gather(codes, items, test_sessions, n_codes)
    stages.append(_stage("test period", test[1], test[0], source))

    train, fit_sessions, valid, valid_split = full_train, train_sessions, None, ""
    if valid_span is not None:
        cut = session_date[train_sessions].max() - valid_span
        fit_sessions = train_sessions[session_date[train_sessions] < cut]
        valid = _gather(codes, items, train_sessions[session_date[train_sessions] > cut], n_codes)
        stages.append(_stage("validation period", valid[1], valid[0], source))
        train = _gather(codes, items, fit_sessions, n_codes)
        stages.append(_stage("train: fitting period", train[1], train[0], source))
        valid_split = str(cut)
    if fraction > 1:
        kept = fit_sessions[len(fit_sessions) - len(fit_sessions) // fraction :]
        train = _gather(codes, items, kept, n_codes)
        stages.append(_stage(f"train: most recent 1/{fraction}", train[1], train[0], source))

    vocab_from = full_train[0] if vocab_scope == "train" else train[0]
    data, test_stages = index_sessions(train, test, name=name, source=source, vocab_from=vocab_from,
                                       valid=valid)
    report = PreprocessReport(source, (*stages, *test_stages), str(split), valid_split)
    return Preprocessed(data, report)
