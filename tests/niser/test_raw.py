"""Raw click logs through the SR-GNN / NISER preprocessing, bad input, and ``load_dataset``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from niser.data import DataError
from niser.raw import load_dataset, load_diginetica, preprocess_diginetica, preprocess_yoochoose

HEADER = "session_id;user_id;item_id;timeframe;eventdate"
A, B, C, D, E = 10, 20, 30, 40, 50  # D is rare (< 5 clicks); E is only clicked in the test period

# (session, item, timeframe, date), in file order
ROWS = [
    (5, C, 10, "2016-01-04"), (5, B, 20, "2016-01-04"),
    (2, A, 10, "2016-01-02"),                                # single click
    (1, C, 300, "2016-01-01"), (1, A, 100, "2016-01-01"), (1, B, 200, "2016-01-01"),
    (3, B, 1, "2016-01-02"), (3, C, 2, "2016-01-02"), (3, A, 3, "2016-01-02"),
    (4, D, 1, "2016-01-03"), (4, A, 2, "2016-01-03"),        # left with one click once D goes
    (6, A, 500, "2016-01-14"), (6, B, 100, "2016-01-13"),    # dated by its last row: split day
    (7, A, 1, "2016-01-15"), (7, E, 2, "2016-01-15"), (7, B, 3, "2016-01-15"),
    (8, E, 1, "2016-01-16"), (8, E, 2, "2016-01-16"), (8, C, 3, "2016-01-16"),
    (10, E, 1, "2016-01-17"), (10, D, 2, "2016-01-17"), (10, E, 3, "2016-01-17"),
    (9, B, 1, "2016-01-20"), (9, A, 2, "2016-01-20"), (9, C, 3, "2016-01-20"),
    (9, E, 4, "2016-01-20"),
]


def _csv(path: Path, rows=ROWS, header=HEADER) -> Path:
    lines = [header, *(f"{s};NA;{i};{t};{d}" for s, i, t, d in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hand_built_log_goes_through_every_filter_with_expected_counts(tmp_path):
    out = preprocess_diginetica(_csv(tmp_path / "train-item-views.csv"))
    got = {s.name: (s.sessions, s.clicks, s.items) for s in out.report.stages}
    assert got == {
        "raw": (10, 26, 5),
        "drop single-click sessions": (9, 25, 5),
        "drop items with < 5 clicks": (9, 23, 4),
        "drop sessions left with < 2 clicks": (8, 22, 4),
        "train period": (3, 8, 3),  # sessions 1, 3, 5; session 6 sits on the split day
        "test period": (4, 12, 4),  # sessions 7, 8, 9, 10
        "test: drop clicks on items unseen in training": (3, 6, 3),  # session 10 was all E
        "test: drop sessions left with < 2 clicks": (2, 5, 3),  # session 8 was E E C
    }
    assert out.report.split_date == "2016-01-13T00:00:00"
    data = out.data
    # items indexed by first appearance in the train sessions sorted by date: 1 (A B C), 3, 5
    assert data.vocab.raw_ids.tolist() == [A, B, C]
    assert data.train.sessions() == [[1], [1, 2], [2], [2, 3], [3]]
    assert data.train.targets.tolist() == [2, 3, 3, 1, 2]
    assert data.test.sessions() == [[1], [2], [2, 1]]  # sessions 7 (A B) and 9 (B A C)
    assert data.test.targets.tolist() == [2, 1, 3]
    assert data.name == "diginetica"


def test_min_item_clicks_and_test_days_are_configurable(tmp_path):
    out = preprocess_diginetica(
        _csv(tmp_path / "train-item-views.csv"), min_item_clicks=1, test_days=3
    )
    assert out.report.stage("drop items with < 1 clicks").items == 5
    assert out.report.split_date == "2016-01-17T00:00:00"
    assert out.report.stage("test period").sessions == 1  # only session 9 is after 01-17


def _bad_row_cases():
    good = [f"{s};NA;{i};{t};{d}" for s, i, t, d in ROWS[:3]]
    cases = {
        "too few fields": ("1;NA;10;2016-01-01", "expected 5 fields separated by ';'"),
        "too many fields": ("1;NA;10;5;2016-01-01;x", "expected 5 fields separated by ';'"),
        "session id not an integer": ("s1;NA;10;5;2016-01-01", "session_id 's1' is not"),
        "item id not an integer": ("1;NA;1.5;5;2016-01-01", "item_id '1.5' is not a positive"),
        "item id zero": ("1;NA;0;5;2016-01-01", "item_id '0' is not a positive integer"),
        "negative timeframe": ("1;NA;10;-5;2016-01-01", "timeframe '-5' is not a non-negative"),
        "bad date": ("1;NA;10;5;2016-13-01", "eventdate '2016-13-01' is not a date"),
        "missing date": ("1;NA;10;5;", "eventdate '' is not a date"),
    }
    return [
        pytest.param([*good, bad], 5, problem, id=name) for name, (bad, problem) in cases.items()
    ]


@pytest.mark.parametrize(("lines", "lineno", "problem"), _bad_row_cases())
def test_malformed_rows_name_the_file_line_and_problem(tmp_path, lines, lineno, problem):
    path = tmp_path / "train-item-views.csv"
    path.write_text("\n".join([HEADER, *lines, "1;NA;10;5;2016-01-01"]) + "\n")
    with pytest.raises(DataError) as err:
        load_diginetica(path)
    assert f"{path}:{lineno}:" in str(err.value)
    assert problem in str(err.value)


def test_malformed_files_name_the_file_and_problem(tmp_path):
    wrong_header = _csv(tmp_path / "h.csv", header="session;user;item;time;date")
    with pytest.raises(DataError, match=r"h\.csv:1: expected the header"):
        load_diginetica(wrong_header)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_diginetica(empty)
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        load_diginetica(tmp_path / "missing.csv")
    only_header = tmp_path / "header.csv"
    only_header.write_text(HEADER + "\n")
    with pytest.raises(DataError, match=r"header\.csv: no clicks"):
        load_diginetica(only_header)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(HEADER.encode() + b"\n1;NA;10;5;2016-01-01\n1;NA;\xff\xfe;5;2016-01-01\n")
    with pytest.raises(DataError, match=r"binary\.csv:3: not UTF-8 text"):
        load_diginetica(binary)


@pytest.mark.parametrize(
    ("rows", "step"),
    [
        ([(s, A, 1, "2016-01-01") for s in range(6)], "drop single-click sessions"),
        ([(1, A, 1, "2016-01-01"), (1, B, 2, "2016-01-01")], "drop items with < 5 clicks"),
        (
            [(s, i, t, "2016-01-01") for s in range(1, 6) for t, i in enumerate((A, B, C))],
            "train period",  # everything on one day: all test, nothing before the split
        ),
        (
            [(s, i, t, "2016-01-01") for s in range(1, 6) for t, i in enumerate((A, B))]
            + [(s, i, t, "2016-01-20") for s in range(6, 11) for t, i in enumerate((C, D))],
            "test: drop clicks on items unseen in training",
        ),
    ],
    ids=["single clicks", "rare items", "no train", "test items unseen"],
)
def test_nothing_left_names_the_step_that_removed_everything(tmp_path, rows, step):
    with pytest.raises(DataError, match=f"no session left after step '{step}'"):
        load_diginetica(_csv(tmp_path / "t.csv", rows))


def _reference(path: Path) -> tuple[list[list[int]], list[tuple[list[int], int]]]:
    """SR-GNN's preprocessing, written plainly with dicts and loops (no pandas, no numpy)."""
    clicks: dict[str, list[tuple[int, int]]] = {}
    dates: dict[str, datetime] = {}
    for line in path.read_text().splitlines()[1:]:
        session, _, item, timeframe, date = line.split(";")
        clicks.setdefault(session, []).append((int(timeframe), int(item)))
        dates[session] = datetime.strptime(date, "%Y-%m-%d")  # the last row's date wins
    seqs = {s: [i for _, i in sorted(c, key=lambda x: x[0])] for s, c in clicks.items()}
    seqs = {s: q for s, q in seqs.items() if len(q) > 1}
    counts = Counter(i for q in seqs.values() for i in q)
    seqs = {s: [i for i in q if counts[i] >= 5] for s, q in seqs.items()}
    seqs = {s: q for s, q in seqs.items() if len(q) >= 2}
    split = max(dates[s] for s in seqs) - timedelta(days=7)
    train = sorted((s for s in seqs if dates[s] < split), key=lambda s: dates[s])
    test = sorted((s for s in seqs if dates[s] > split), key=lambda s: dates[s])
    index: dict[int, int] = {}
    train_seqs = [[index.setdefault(i, len(index) + 1) for i in seqs[s]] for s in train]
    test_seqs = [[index[i] for i in seqs[s] if i in index] for s in test]
    samples = [(q[:j], q[j]) for q in test_seqs if len(q) >= 2 for j in range(1, len(q))]
    return train_seqs, samples


def test_raw_diginetica_sample_end_to_end_matches_a_plain_reference(shared_data):
    path = shared_data / "diginetica-raw-sample" / "train-item-views.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    out = preprocess_diginetica(path)
    raw = out.report.stage("raw")
    assert (raw.sessions, raw.clicks, raw.items) == (2986, 12391, 7139)  # as its README says
    train_seqs, test_samples = _reference(path)
    data = out.data
    expected_train = [(q[:j], q[j]) for q in train_seqs for j in range(1, len(q))]
    assert list(zip(data.train.sessions(), data.train.targets.tolist(), strict=True)) == (
        expected_train
    )
    assert list(zip(data.test.sessions(), data.test.targets.tolist(), strict=True)) == (
        test_samples
    )
    assert data.summary()["n_items"] == 309
    assert (len(data.train), len(data.test)) == (1205, 99)
    assert data.vocab.decode(data.train.items).min() >= 1


def _dat(path: Path, sessions: list[tuple[int, str, list[int]]]) -> Path:
    """One row per click; clicks one minute apart from ``start``, written newest first."""
    lines = []
    for sid, start, items in sessions:
        t0 = datetime.fromisoformat(start)
        rows = [
            f"{sid},{(t0 + timedelta(minutes=k)).isoformat(timespec='milliseconds')}Z,{item},0"
            for k, item in enumerate(items)
        ]
        lines.extend(reversed(rows))  # out of time order within the session on purpose
    path.write_text("\n".join(lines) + "\n")
    return path


# Every item has 5 clicks. Rows are written newest first, so each session is dated by its first
# click (its last row in the file): the split is 2014-04-05T11:00 - 1 day.
YOO = [
    (11, "2014-04-01T10:00:00", [9, 9, 9, 9, 1]),
    (12, "2014-04-02T10:00:00", [1, 2, 3]),
    (13, "2014-04-03T10:00:00", [2, 3, 1]),
    (14, "2014-04-04T09:00:00", [3, 1, 2]),
    (15, "2014-04-05T10:00:00", [9, 1]),
    (16, "2014-04-05T11:00:00", [2, 3, 2, 3]),
]


def test_yoochoose_keeps_the_most_recent_fraction_of_training_sessions(tmp_path):
    path = _dat(tmp_path / "yoochoose-clicks.dat", YOO)
    full = preprocess_yoochoose(path, fraction=1)
    assert full.data.name == "yoochoose"
    assert full.report.split_date == "2014-04-04T11:00:00"
    assert full.report.stage("train period").sessions == 4
    assert full.data.vocab.raw_ids.tolist() == [9, 1, 2, 3]
    assert full.data.train.sessions()[:4] == [[1], [1, 1], [1, 1, 1], [1, 1, 1, 1]]
    assert len(full.data.train) == 4 + 2 + 2 + 2

    half = preprocess_yoochoose(path, fraction=2)  # the 2 most recent of 4 training sessions
    assert half.data.name == "yoochoose1_2"
    assert half.report.stage("train: most recent 1/2").sessions == 2
    assert half.data.train.sessions() == [[3], [3, 4], [4], [4, 2]]  # 2 3 1 and 3 1 2
    assert half.data.train.targets.tolist() == [4, 2, 2, 3]
    assert half.data.vocab == full.data.vocab  # SR-GNN: vocabulary of the whole training period
    assert half.data.test.fingerprint() == full.data.test.fingerprint()
    assert half.data.test.sessions() == [[1], [3], [3, 4], [3, 4, 3]]
    assert half.data.test.targets.tolist() == [2, 4, 3, 4]

    own = preprocess_yoochoose(path, fraction=2, vocab_scope="fraction")
    assert own.data.vocab.raw_ids.tolist() == [2, 3, 1]
    assert own.data.test.sessions() == [[1], [1, 2], [1, 2, 1]]  # 9 1 lost 9, then its length
    with pytest.raises(DataError, match="no session left after step 'train: most recent 1/64'"):
        preprocess_yoochoose(path, fraction=64)


def test_yoochoose_malformed_rows_name_the_file_and_line(tmp_path):
    path = _dat(tmp_path / "yoochoose-clicks.dat", YOO)
    text = path.read_text().splitlines()
    for bad, problem in [
        ("11,2014-04-01T10:00:00.000Z,9", "expected 4 fields separated by ','"),
        ("11,2014-04-01 noon,9,0", "timestamp '2014-04-01 noon' is not a date"),
        ("11,2014-04-01T10:00:00.000Z,x9,0", "item_id 'x9' is not a positive integer"),
    ]:
        path.write_text("\n".join([*text[:2], bad, *text[2:]]) + "\n")
        with pytest.raises(DataError) as err:
            preprocess_yoochoose(path, fraction=1)
        assert f"{path}:3: {problem}" in str(err.value)


def test_load_dataset_dispatches_every_form(tmp_path):
    assert load_dataset().name == "synthetic"
    small = load_dataset("synthetic:n_items=50,n_sessions=300,seed=2")
    assert small.name.startswith("synthetic-") and small.n_items <= 50
    assert load_dataset(_csv(tmp_path / "train-item-views.csv")).name == "diginetica"
    dat = _dat(tmp_path / "yoochoose-clicks.dat", YOO)
    assert load_dataset(f"{dat}@1/2").name == "yoochoose1_2"
    assert load_dataset(f"{dat}@1").name == "yoochoose"
    assert load_dataset(dat, yoochoose_fraction=2).name == "yoochoose1_2"
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train_sessions.txt").write_text("1 2 3\n")
    (folder / "test.tsv").write_text("1\t2\n")
    assert len(load_dataset(folder).train) == 2


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("imagenet", "not a known dataset form"),
        ("/nowhere/train-item-views.csv", "no such file or folder"),
        ("synthetic:n_items=10,colour=red", "invalid synthetic options"),
        ("synthetic:n_items", "key=value pairs"),
    ],
)
def test_load_dataset_rejects_unknown_specs_listing_the_accepted_forms(spec, why):
    with pytest.raises(ValueError) as err:
        load_dataset(spec)
    message = str(err.value)
    assert why in message
    assert "Accepted forms" in message and "train_sessions.txt and test.tsv" in message
