"""Replay traces: real sessions as a client sends them, click by click, in raw item ids.

A ``Trace`` is the sessions of a log in the log's order. Each ``TraceSession`` has an id, its raw
item ids in click order, each click's offset in seconds from the session's first click (None when
the log has no click times) and, when the log has absolute times, the first click's time.

Loaders (``load_trace`` picks one from the path):

- a preprocessed SR-GNN folder (or its ``test.tsv``): lines ``prefix ids<TAB>target``, the
  prefixes of one session on consecutive lines, longest first. A session is the first line's
  prefix followed by its target; its id is ``line<N>``, N the line it starts on. No click times.
  The folder's vocabulary is the identity, so these ids are the raw ids a client sends.
- a raw Diginetica log (``*.csv``, ``session_id;user_id;item_id;timeframe;eventdate``): sessions
  in order of first appearance, clicks ordered by ``timeframe`` (ms since the session start), the
  offsets from it. ``eventdate`` is a day only, so session start times are unknown (None).
- a raw Yoochoose log (``*.dat``, ``session_id,timestamp,item_id,category``): clicks ordered by
  timestamp, which gives both the click offsets and the session start times.

Selection, in this order: with ``last_days`` (raw logs only) the sessions dated in the log's last
``last_days`` days (a session's date is its last row's, as ``niser.preprocess`` splits the test
set), then sessions with at least ``min_length`` clicks, then the first ``sessions`` of them.
Bad input raises ``ValueError`` (``niser.data.DataError`` for files) naming the option, or the
file and line.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from niser.data import DataError
from niser.raw import read_diginetica, read_yoochoose

_ID = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class TraceSession:
    """One recorded session: id, raw item ids in click order, click offsets, start time."""

    session_id: str
    items: tuple[int, ...]
    offsets_s: tuple[float, ...] | None = None  # per click, from the first click (first is 0)
    start_s: float | None = None  # first click, seconds on the log's clock (unix time)

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError(f"session {self.session_id!r} has no clicks")
        if self.offsets_s is not None:
            if len(self.offsets_s) != len(self.items):
                raise ValueError(
                    f"session {self.session_id!r}: {len(self.offsets_s)} click offsets for "
                    f"{len(self.items)} clicks; give one offset per click"
                )
            if self.offsets_s[0] != 0 or any(
                b < a for a, b in itertools.pairwise(self.offsets_s)):
                raise ValueError(
                    f"session {self.session_id!r}: click offsets must start at 0 and never "
                    f"decrease, got {list(self.offsets_s)[:10]}"
                )


@dataclass(frozen=True)
class Trace:
    """Sessions of one log, in its order."""

    source: str
    sessions: tuple[TraceSession, ...]

    @property
    def clicks(self) -> int:
        return sum(len(s.items) for s in self.sessions)

    @property
    def timed(self) -> bool:
        """Whether every session has click offsets (the recorded pace can be replayed)."""
        return bool(self.sessions) and all(s.offsets_s is not None for s in self.sessions)

    @property
    def started(self) -> bool:
        """Whether every session has a start time (recorded gaps between sessions)."""
        return bool(self.sessions) and all(s.start_s is not None for s in self.sessions)


def _ids(text: str, path: Path, lineno: int, what: str) -> list[int]:
    words = text.split()
    bad = [w for w in words if not _ID.fullmatch(w)]
    if bad:
        raise DataError(f"{path}:{lineno}: {what} {bad[0]!r} is not a positive integer item id")
    if not words:
        raise DataError(f"{path}:{lineno}: empty {what}; expected 'prefix ids<TAB>target'")
    return [int(w) for w in words]


def read_test_tsv(path: str | Path) -> list[TraceSession]:
    """Whole sessions rebuilt from a ``test.tsv`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a preprocessed test.tsv)")
    out: list[TraceSession] = []
    current: list[int] = []
    expect = 0  # the prefix length a continuation of ``current`` would have
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}: expected 'prefix ids<TAB>target', got "
                                f"{len(parts)} tab-separated fields: {line[:120]!r}")
            prefix = _ids(parts[0], path, lineno, "prefix")
            target = _ids(parts[1], path, lineno, "target")
            if len(target) != 1:
                raise DataError(f"{path}:{lineno}: expected one target item, got {parts[1]!r}")
            seq = prefix + target
            if len(prefix) == expect and seq == current[: len(seq)]:
                expect -= 1
                continue
            current, expect = seq, len(prefix) - 1
            out.append(TraceSession(f"line{lineno}", tuple(seq)))
    if not out:
        raise DataError(f"{path}: no test samples")
    return out


def _by_session(df: pd.DataFrame, order: np.ndarray, date: pd.Series, last_days: int | None
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows grouped by session (first appearance order), sorted by ``order`` within a session
    (ties in file order), and the bounds of each session; only sessions dated in the last
    ``last_days`` days when given."""
    codes = pd.factorize(df["session_id"])[0]
    frame = pd.DataFrame({"s": codes, "order": order, "row": np.arange(len(df)),
                          "session_id": df["session_id"].to_numpy(),
                          "item_id": df["item_id"].to_numpy(), "date": date.to_numpy()})
    if last_days is not None:
        session_date = frame.groupby("s")["date"].last()  # the last row's, in file order
        cut = session_date.max() - np.timedelta64(last_days, "D")
        keep = session_date.index[session_date > cut]
        frame = frame[frame["s"].isin(keep)]
    frame = frame.sort_values(["s", "order", "row"], kind="stable")
    s = frame["s"].to_numpy()
    bounds = np.flatnonzero(np.diff(s)) + 1 if len(s) else np.array([], dtype=np.int64)
    return frame, np.concatenate([[0], bounds, [len(s)]]).astype(np.int64)


def _sessions(frame: pd.DataFrame, bounds: np.ndarray, per_second: float, started: bool
              ) -> list[TraceSession]:
    """One ``TraceSession`` per ``bounds`` slice; ``order`` in units of ``1 / per_second`` s."""
    items, t, ids = (frame[c].to_numpy() for c in ("item_id", "order", "session_id"))
    out = []
    for a, b in itertools.pairwise(bounds):
        offsets = tuple(float(o) for o in (t[a:b] - t[a]) / per_second)
        start = float(t[a]) / per_second if started else None
        out.append(TraceSession(str(ids[a]), tuple(int(i) for i in items[a:b]), offsets, start))
    return out


def read_diginetica_trace(path: str | Path, last_days: int | None = None) -> list[TraceSession]:
    """The sessions of a raw Diginetica log, offsets from ``timeframe`` (see the module
    docstring)."""
    df = read_diginetica(path)
    frame, bounds = _by_session(df, df["timeframe"].to_numpy(), df["eventdate"], last_days)
    return _sessions(frame, bounds, 1e3, started=False)


def read_yoochoose_trace(path: str | Path, last_days: int | None = None) -> list[TraceSession]:
    """The sessions of a raw Yoochoose log, offsets and start times from ``timestamp``."""
    df = read_yoochoose(path)
    ns = df["timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64)
    frame, bounds = _by_session(df, ns, df["timestamp"], last_days)
    return _sessions(frame, bounds, 1e9, started=True)


def select(sessions: list[TraceSession], source: str, *, limit: int | None = None,
           min_length: int = 2) -> Trace:
    """Sessions with at least ``min_length`` clicks, then the first ``limit`` of them."""
    if limit is not None and limit < 1:
        raise ValueError(f"sessions must be >= 1 (how many sessions to replay), got {limit}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1 click, got {min_length}")
    kept = [s for s in sessions if len(s.items) >= min_length]
    if not kept:
        raise ValueError(f"{source}: none of its {len(sessions)} sessions has at least "
                         f"{min_length} clicks; lower min_length or pass another log")
    return Trace(source, tuple(kept[:limit] if limit is not None else kept))


def load_trace(path: str | Path, *, sessions: int | None = None, min_length: int = 2,
               last_days: int | None = None) -> Trace:
    """The trace of ``path``: a preprocessed folder or its ``test.tsv``, a raw Diginetica
    ``.csv`` or a raw Yoochoose ``.dat`` log; then ``select``."""
    p = Path(path)
    if last_days is not None and last_days < 1:
        raise ValueError(f"last_days must be >= 1 day, got {last_days}")
    if p.is_dir():
        p = p / "test.tsv"
        if not p.is_file():
            raise DataError(f"{path}: the folder has no test.tsv (expected a preprocessed "
                            "SR-GNN folder, a raw Diginetica .csv or a raw Yoochoose .dat)")
    if not p.exists():
        raise DataError(f"{p}: no such file or folder (expected a preprocessed folder, its "
                        "test.tsv, a raw Diginetica .csv or a raw Yoochoose .dat)")
    if p.suffix == ".tsv":
        if last_days is not None:
            raise ValueError(f"last_days applies to raw click logs only; {p} is already the "
                             "test split: leave last_days out")
        found = read_test_tsv(p)
    elif p.suffix == ".csv":
        found = read_diginetica_trace(p, last_days)
    elif p.suffix == ".dat":
        found = read_yoochoose_trace(p, last_days)
    else:
        raise DataError(f"{p}: not a known trace form (a preprocessed folder or test.tsv, a raw "
                        "Diginetica .csv, a raw Yoochoose .dat)")
    return select(found, str(p), limit=sessions, min_length=min_length)
