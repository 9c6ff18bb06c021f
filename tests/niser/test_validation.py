"""The validation split: carved from the training period only, whole sessions, the most recent
ones; by date for raw logs, never reaching the test period."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from niser.data import (
    DataError,
    Samples,
    SessionData,
    augment_prefixes,
    carve_validation,
    session_ids,
)
from niser.raw import preprocess_diginetica
from niser.synthetic import SyntheticConfig, generate
from niser.vocab import Vocabulary


def test_session_ids_recover_sessions_from_the_augmentation_order() -> None:
    samples = augment_prefixes([[1, 2, 3], [4, 5], [1, 2, 3, 4], [2, 2], [2, 2, 2]])
    assert session_ids(samples).tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]


def test_session_ids_continue_a_session_only_when_the_prefix_extends_the_previous_one() -> None:
    # [1, 2] has the length and the last item of a continuation of [7] -> 2, not its prefix
    apart = Samples.from_pairs([[7], [1, 2]], [2, 3])
    joined = Samples.from_pairs([[7], [7, 2]], [2, 3])
    assert session_ids(apart).tolist() == [0, 1]
    assert session_ids(joined).tolist() == [0, 0]


@pytest.fixture(scope="module")
def synthetic() -> SessionData:
    return generate(SyntheticConfig(n_items=80, n_sessions=500, seed=2))


def test_carved_validation_is_the_most_recent_tenth_of_training_sessions_whole(
        synthetic: SessionData) -> None:
    carved = carve_validation(synthetic)
    assert carved.valid is not None
    sid = session_ids(synthetic.train)
    n_sessions = int(sid[-1]) + 1
    cut = int(np.searchsorted(sid, n_sessions - round(0.1 * n_sessions)))
    assert carved.train.sessions() == synthetic.train.sessions()[:cut]
    assert carved.valid.sessions() == synthetic.train.sessions()[cut:]
    assert carved.valid.targets.tolist() == synthetic.train.targets[cut:].tolist()
    assert sid[cut - 1] != sid[cut]  # the cut falls between two sessions, never inside one
    assert carved.test is synthetic.test  # the test period is not touched


def test_validation_shares_no_session_with_the_fitting_samples(synthetic: SessionData) -> None:
    carved = carve_validation(synthetic)
    assert carved.valid is not None
    fit_sessions = set(session_ids(synthetic.train)[: len(carved.train)].tolist())
    valid_sessions = set(session_ids(synthetic.train)[len(carved.train):].tolist())
    assert not fit_sessions & valid_sessions
    assert len(carved.train) + len(carved.valid) == len(synthetic.train)


def test_carving_is_idempotent_and_changes_the_fingerprint(synthetic: SessionData) -> None:
    carved = carve_validation(synthetic)
    assert carve_validation(carved) is carved
    assert carved.fingerprint() != synthetic.fingerprint()
    assert carved.summary()["n_valid_samples"] == len(carved.valid or [])
    assert "n_valid_samples" not in synthetic.summary()


def test_carving_needs_two_training_sessions() -> None:
    one = augment_prefixes([[1, 2, 3]])
    with pytest.raises(DataError, match="at least 2"):
        carve_validation(SessionData("one", one, one, Vocabulary.identity(3)))


# --- by date, on a raw log -----------------------------------------------------------------------
X, FIRST = 7, date(2016, 1, 1)  # X: an item clicked every day; marker 1000 + n: day n only


def _daily_log(path: Path, days: int = 30) -> Path:
    """One session a day, clicking the day's marker then X; a later test session re-clicks the
    first day's marker so that one test session survives the vocabulary filter."""
    lines = ["session_id;user_id;item_id;timeframe;eventdate"]
    for n in range(1, days + 1):
        day = FIRST + timedelta(days=n - 1)
        lines += [f"{n};NA;{1000 + n};1;{day}", f"{n};NA;{X};2;{day}"]
    lines += [f"99;NA;{X};1;{FIRST + timedelta(days=24)}",
              f"99;NA;{1001};2;{FIRST + timedelta(days=24)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _days(samples, vocab: Vocabulary) -> set[int]:
    """The day of each session whose first click is a marker."""
    firsts = vocab.decode(samples.items[samples.offsets[:-1]])
    return {int(r) - 1000 for r in firsts if r != X}


def test_date_carved_validation_is_the_days_before_the_test_period_and_never_reaches_it(
        tmp_path: Path) -> None:
    out = preprocess_diginetica(_daily_log(tmp_path / "log.csv"), min_item_clicks=1, test_days=7,
                                valid_days=5)
    data, report = out.data, out.report
    assert data.valid is not None
    # test split at day 23 (30 - 7): test = days 24..30, training = days 1..22
    assert report.split_date == "2016-01-23T00:00:00"
    # the same rule on the training period: 22 - 5 = day 17: validation 18..22, fitting 1..16
    assert report.valid_split_date == "2016-01-17T00:00:00"
    assert _days(data.valid, data.vocab) == set(range(18, 23))
    assert _days(data.train, data.vocab) == set(range(1, 17))
    assert data.test.sessions() == [[data.vocab.encode_batch([[X]]).flat[0]]]  # session 99
    assert report.stage("validation period").sessions == 5
    assert report.stage("train: fitting period").sessions == 16


def test_raw_sample_validation_lies_strictly_between_fitting_and_test_dates(
        shared_data: Path) -> None:
    out = preprocess_diginetica(shared_data / "diginetica-raw-sample" / "train-item-views.csv",
                                valid_days=7)
    report = out.report
    assert report.valid_split_date < report.split_date
    assert np.datetime64(report.split_date) - np.datetime64(report.valid_split_date) >= \
        np.timedelta64(8, "D")  # 7 validation days after the valid split, the split day between
    assert out.data.valid is not None and len(out.data.valid) > 0
    train = report.stage("train period").sessions
    assert report.stage("validation period").sessions + report.stage(
        "train: fitting period").sessions <= train
