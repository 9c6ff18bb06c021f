"""Raw click logs (Diginetica, Yoochoose) to ``SessionData``, and the ``load_dataset`` dispatcher.

The readers parse with pandas' C parser. Only when that parse meets a problem (an exception, a
missing field, a negative id, an unparsable date) is the file scanned again line by line, so that
the ``DataError`` names the file, the first bad line and what is wrong with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from niser.data import PREPARED_SUFFIX, DataError, SessionData, load_prepared, load_preprocessed
from niser.preprocess import Preprocessed, preprocess_clicks

if TYPE_CHECKING:
    from niser.synthetic import SyntheticConfig

log = logging.getLogger(__name__)

_UINT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Format:
    name: str
    sep: str
    columns: tuple[str, ...]
    header: bool
    ints: tuple[str, ...]  # non-negative integers; "item_id" must be >= 1
    date: str
    date_format: str  # a strptime format, or "ISO8601"
    other: tuple[str, ...] = field(default=())  # read but not validated (user_id, category)

    def parse_date(self, text: str) -> datetime:
        if self.date_format == "ISO8601":
            return datetime.fromisoformat(text)
        return datetime.strptime(text, self.date_format)


DIGINETICA = _Format(
    "Diginetica", ";", ("session_id", "user_id", "item_id", "timeframe", "eventdate"), True,
    ints=("session_id", "item_id", "timeframe"), date="eventdate", date_format="%Y-%m-%d",
    other=("user_id",),
)
YOOCHOOSE = _Format(
    "Yoochoose", ",", ("session_id", "timestamp", "item_id", "category"), False,
    ints=("session_id", "item_id"), date="timestamp", date_format="ISO8601", other=("category",),
)


def _scan(path: Path, fmt: _Format) -> None:
    """Raise ``DataError`` at the first malformed line of ``path``; return if there is none."""
    expected = fmt.sep.join(fmt.columns)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
            if fmt.header and lineno == 1:
                if line.lstrip("\ufeff") != expected:
                    raise DataError(f"{path}:1: expected the header {expected!r}, got {line!r}")
                continue
            if not line.strip():  # blank lines are skipped, as pandas skips them
                continue
            fields = line.split(fmt.sep)
            if len(fields) != len(fmt.columns):
                raise DataError(
                    f"{path}:{lineno}: expected {len(fmt.columns)} fields separated by "
                    f"{fmt.sep!r} ({expected}), got {len(fields)}: {line[:120]!r}"
                )
            row = dict(zip(fmt.columns, fields, strict=True))
            for col in fmt.ints:
                value = row[col]
                if not _UINT.fullmatch(value) or (col == "item_id" and int(value) < 1):
                    kind = "a positive" if col == "item_id" else "a non-negative"
                    raise DataError(f"{path}:{lineno}: {col} {value!r} is not {kind} integer")
            try:
                fmt.parse_date(row[fmt.date])
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: {fmt.date} {row[fmt.date]!r} is not a date "
                    f"({fmt.date_format})"
                ) from None


def _read(path: str | Path, fmt: _Format) -> pd.DataFrame:
    """The rows of a raw click log with ints parsed and ``fmt.date`` as datetime64, file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a raw {fmt.name} click log)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (expected a raw {fmt.name} click log)")
    if fmt.header:
        with path.open("rb") as f:
            first = f.readline()
        if first.decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff") != fmt.sep.join(
            fmt.columns
        ):
            _scan(path, fmt)
    dtype = {c: ("int64" if c in fmt.ints else "str") for c in fmt.columns}
    dtype.update({c: "category" for c in fmt.other})
    try:
        df = pd.read_csv(
            path, sep=fmt.sep, header=0 if fmt.header else None, names=list(fmt.columns),
            dtype=dtype, keep_default_na=False, na_values=[""], engine="c",  # type: ignore[arg-type]
        )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        _scan(path, fmt)
        raise DataError(f"{path}: cannot be read as a {fmt.name} click log: {e}") from e
    if fmt.date_format == "ISO8601":
        dates = pd.to_datetime(df[fmt.date], format="ISO8601", errors="coerce", utc=True)
        dates = dates.dt.tz_localize(None)
    else:
        dates = pd.to_datetime(df[fmt.date], format=fmt.date_format, errors="coerce")
    bad_required = (
        bool(dates.isna().any())
        or bool(df[list(fmt.ints)].isna().any().any())
        or bool((df[list(fmt.ints)] < 0).any().any())
        or bool((df["item_id"] < 1).any())
    )
    if bad_required or bool(df[list(fmt.other)].isna().any().any()):
        _scan(path, fmt)  # raises at the first malformed line
        if bad_required:
            raise DataError(f"{path}: cannot be read as a {fmt.name} click log (unparsable values)")
    if df.empty:
        raise DataError(f"{path}: no clicks in the file")
    df[fmt.date] = dates
    return df


def read_diginetica(path: str | Path) -> pd.DataFrame:
    """The rows of a raw Diginetica click log in file order (``eventdate`` as datetime64);
    ``DataError`` names the first malformed line."""
    return _read(path, DIGINETICA)


def read_yoochoose(path: str | Path) -> pd.DataFrame:
    """The rows of a raw Yoochoose click log in file order (``timestamp`` as datetime64, UTC);
    ``DataError`` names the first malformed line."""
    return _read(path, YOOCHOOSE)


def _span(days: int | None) -> np.timedelta64 | None:
    return None if days is None else np.timedelta64(days, "D")


def preprocess_diginetica(
    path: str | Path, *, min_item_clicks: int = 5, test_days: int = 7,
    valid_days: int | None = None,
) -> Preprocessed:
    """``train-item-views.csv`` through the SR-GNN preprocessing (see ``niser.preprocess``).

    Clicks are ordered within a session by ``timeframe``; the session date is ``eventdate`` of
    the session's last row in the file; the last ``test_days`` days are the test set, and with
    ``valid_days`` the last days of the training period before it are the validation set.
    """
    df = _read(path, DIGINETICA)
    clicks = pd.DataFrame(
        {"session_id": df["session_id"], "item_id": df["item_id"], "order": df["timeframe"],
         "date": df["eventdate"]}
    )
    out = preprocess_clicks(
        clicks, source=str(path), name="diginetica", min_item_clicks=min_item_clicks,
        test_span=np.timedelta64(test_days, "D"), valid_span=_span(valid_days),
    )
    log.info("preprocessed %s: %s", path, out.report.as_dict())
    return out


def load_diginetica(
    path: str | Path, *, min_item_clicks: int = 5, test_days: int = 7,
    valid_days: int | None = None,
) -> SessionData:
    """``preprocess_diginetica(...).data``."""
    return preprocess_diginetica(path, min_item_clicks=min_item_clicks, test_days=test_days,
                                 valid_days=valid_days).data


def preprocess_yoochoose(
    path: str | Path,
    *,
    fraction: int = 64,
    vocab_scope: Literal["train", "fraction"] = "train",
    min_item_clicks: int = 5,
    test_days: int = 1,
    valid_days: int | None = None,
) -> Preprocessed:
    """``yoochoose-clicks.dat`` through the SR-GNN preprocessing (see ``niser.preprocess``).

    Clicks are ordered within a session by timestamp; the session date is the timestamp, in
    whole seconds, of the session's last row in the file; the last ``test_days`` days are the test
    set. ``fraction`` d keeps the most recent 1/d of the training sessions (64 and 4 are the usual
    "yoochoose1_64" and "yoochoose1_4"; 1 keeps all). With ``vocab_scope="train"`` (SR-GNN's code)
    the vocabulary and the test filter cover the whole training period, so both fractions share the
    published test set; ``"fraction"`` indexes only items of the kept sessions. ``valid_days``
    carves the last days of the training period as the validation set (before the fraction).
    """
    df = _read(path, YOOCHOOSE)
    clicks = pd.DataFrame(
        {"session_id": df["session_id"], "item_id": df["item_id"],
         "order": df["timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64),
         "date": df["timestamp"]}
    )
    out = preprocess_clicks(
        clicks, source=str(path), name="yoochoose" if fraction == 1 else f"yoochoose1_{fraction}",
        min_item_clicks=min_item_clicks, test_span=np.timedelta64(test_days, "D"),
        fraction=fraction, vocab_scope=vocab_scope, valid_span=_span(valid_days),
    )
    log.info("preprocessed %s: %s", path, out.report.as_dict())
    return out


def load_yoochoose(
    path: str | Path,
    *,
    fraction: int = 64,
    vocab_scope: Literal["train", "fraction"] = "train",
    min_item_clicks: int = 5,
    test_days: int = 1,
    valid_days: int | None = None,
) -> SessionData:
    """``preprocess_yoochoose(...).data``."""
    return preprocess_yoochoose(
        path, fraction=fraction, vocab_scope=vocab_scope, min_item_clicks=min_item_clicks,
        test_days=test_days, valid_days=valid_days,
    ).data


SPEC_FORMS = (
    "'synthetic' (the default generator) or 'synthetic:key=value,...' (SyntheticConfig fields, "
    "e.g. 'synthetic:n_items=1000,seed=3')",
    "a folder holding train_sessions.txt and test.tsv (the preprocessed SR-GNN format)",
    "a path to a raw Diginetica click log ending in .csv (train-item-views.csv)",
    "a path to a raw Yoochoose click log ending in .dat (yoochoose-clicks.dat), optionally "
    "followed by '@1/64', '@1/4' or '@1' for the most recent training fraction (default 1/64)",
    "a prepared dataset file ending in .npz (written by niser.data.save_prepared)",
)


def _unknown(spec: str, why: str) -> ValueError:
    forms = "\n".join(f"  - {f}" for f in SPEC_FORMS)
    return ValueError(f"dataset spec {spec!r}: {why}. Accepted forms:\n{forms}")


def check_synthetic_spec(spec: str) -> None:
    """For a ``synthetic:...`` spec, its options checked (``ValueError`` naming the option, the
    value and the limit) without generating anything; other specs are left to ``load_dataset``."""
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        _synthetic_config(text)


def _synthetic(spec: str) -> SessionData:
    from niser.synthetic import generate

    return generate(_synthetic_config(spec))


def _synthetic_config(spec: str) -> SyntheticConfig:
    from niser.synthetic import SyntheticConfig

    _, _, options = spec.partition(":")
    pairs = [p.split("=", 1) for p in options.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise _unknown(spec, "synthetic options must be key=value pairs separated by commas")
    try:
        config = SyntheticConfig.model_validate({k.strip(): v.strip() for k, v in pairs})
    except ValueError as e:
        raise _unknown(spec, f"invalid synthetic options: {e}") from e
    return config


def load_dataset(
    spec: str | Path = "synthetic", *, yoochoose_fraction: int | None = None
) -> SessionData:
    """The dataset named by ``spec`` (see ``SPEC_FORMS``); ``ValueError`` listing them if unknown.

    ``yoochoose_fraction`` (a denominator: 64, 4, 1) overrides the '@1/d' suffix of a Yoochoose
    spec. Malformed files raise ``DataError``.
    """
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        return _synthetic(text)
    fraction = 64
    match = re.fullmatch(r"(.+\.dat)@1(?:/(\d+))?", text)
    if match:
        text, fraction = match.group(1), int(match.group(2) or 1)
    if yoochoose_fraction is not None:
        fraction = yoochoose_fraction
    path = Path(text)
    loaders: dict[str, Callable[[], SessionData]] = {
        ".csv": lambda: load_diginetica(path),
        ".dat": lambda: load_yoochoose(path, fraction=fraction),
        PREPARED_SUFFIX: lambda: load_prepared(path),
    }
    if path.is_dir():
        if not (path / "train_sessions.txt").is_file() or not (path / "test.tsv").is_file():
            raise _unknown(text, "the folder has no train_sessions.txt and test.tsv")
        return load_preprocessed(path)
    if path.is_file() and path.suffix in loaders:
        return loaders[path.suffix]()
    if not path.exists() and (path.suffix in loaders or "/" in text):
        raise _unknown(text, f"no such file or folder: {path.resolve()}")
    raise _unknown(text, "not a known dataset form")
