"""Samples, prefix augmentation and the preprocessed SR-GNN format."""

from __future__ import annotations

import numpy as np
import pytest

from niser.data import DataError, Samples, augment_prefixes, load_preprocessed


def test_from_pairs_keeps_ragged_prefixes_and_targets():
    s = Samples.from_pairs([[1], [1, 2], [4, 5, 6]], [2, 3, 7])
    assert len(s) == 3
    assert s.offsets.tolist() == [0, 1, 3, 6]
    assert s.lengths.tolist() == [1, 2, 3]
    assert s.sessions() == [[1], [1, 2], [4, 5, 6]]
    assert s.targets.tolist() == [2, 3, 7]


def test_subset_gathers_samples_in_the_given_order():
    s = Samples.from_pairs([[1], [1, 2], [4, 5, 6], [9]], [2, 3, 7, 8])
    sub = s.subset(np.array([2, 0, 2]))
    assert sub.sessions() == [[4, 5, 6], [1], [4, 5, 6]]
    assert sub.targets.tolist() == [7, 2, 7]
    assert sub.offsets.tolist() == [0, 3, 4, 7]
    assert len(s.subset(np.array([], dtype=np.int64))) == 0


def test_concat_puts_samples_one_after_the_other():
    a = Samples.from_pairs([[1], [1, 2]], [2, 3])
    b = Samples.from_pairs([[4, 5, 6], [9]], [7, 8])
    both = Samples.concat([a, b])
    assert both.sessions() == [[1], [1, 2], [4, 5, 6], [9]]
    assert both.targets.tolist() == [2, 3, 7, 8]
    assert both.offsets.tolist() == [0, 1, 3, 6, 7]
    assert both.offsets.dtype == np.int64


def test_augment_prefixes_expands_a_session_of_four_into_three_samples():
    s = augment_prefixes([[1, 2, 3, 4], [5, 6]])
    assert s.sessions() == [[1], [1, 2], [1, 2, 3], [5]]
    assert s.targets.tolist() == [2, 3, 4, 6]


def test_fingerprint_changes_with_content():
    a = Samples.from_pairs([[1, 2]], [3])
    assert a.fingerprint() == Samples.from_pairs([[1, 2]], [3]).fingerprint()
    assert a.fingerprint() != Samples.from_pairs([[1, 2]], [4]).fingerprint()


def _write(folder, train, test):
    folder.mkdir(exist_ok=True)
    (folder / "train_sessions.txt").write_text(train)
    (folder / "test.tsv").write_text(test)
    return folder


def test_load_preprocessed_reads_and_augments(tmp_path):
    folder = _write(tmp_path / "split", "1 2 3 4\n5 6\n\n", "1 2\t3\n6\t7\n")
    data = load_preprocessed(folder)
    assert data.name == "split"
    assert len(data.train) == 4
    assert data.train.sessions()[2] == [1, 2, 3]
    assert data.test.sessions() == [[1, 2], [6]]
    assert data.test.targets.tolist() == [3, 7]
    assert data.n_items == 7
    assert data.vocab.encode([7, 8]) == ([7], [8])
    assert data.summary()["n_train_samples"] == 4


@pytest.mark.parametrize(
    ("train", "test", "bad_file", "line", "problem"),
    [
        ("1 2\n1 x 3\n", "1\t2\n", "train_sessions.txt", 2, "'x' is not a positive integer"),
        ("1 2\n0 3\n", "1\t2\n", "train_sessions.txt", 2, "'0' is not a positive integer"),
        ("1 2\n", "1\t2\n1 2 3\n", "test.tsv", 2, "expected 'prefix<TAB>target', got 1 fields"),
        ("1 2\n", "1\t2\n\t2\n", "test.tsv", 2, "empty prefix"),
        ("1 2\n", "1\t2 3\n", "test.tsv", 1, "not exactly one target"),
        ("1 2\n", "1\t-2\n", "test.tsv", 1, "'-2' is not a positive integer"),
    ],
)
def test_malformed_preprocessed_files_name_the_file_and_line(
    tmp_path, train, test, bad_file, line, problem
):
    folder = _write(tmp_path / "bad", train, test)
    with pytest.raises(DataError) as err:
        load_preprocessed(folder)
    assert f"{folder / bad_file}:{line}:" in str(err.value)
    assert problem in str(err.value)


def test_load_preprocessed_names_a_missing_file(tmp_path):
    (tmp_path / "train_sessions.txt").write_text("1 2\n")
    with pytest.raises(DataError, match=r"test\.tsv: file not found"):
        load_preprocessed(tmp_path)


def test_load_preprocessed_rejects_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"train_sessions\.txt: no sessions"):
        load_preprocessed(_write(tmp_path / "a", "\n", "1\t2\n"))
    with pytest.raises(DataError, match=r"test\.tsv: no test samples"):
        load_preprocessed(_write(tmp_path / "b", "1 2\n", ""))
    with pytest.raises(DataError, match=r"train_sessions\.txt: no training samples"):
        load_preprocessed(_write(tmp_path / "c", "1\n2\n", "1\t2\n"))


def test_non_ascii_digits_are_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"train_sessions\.txt:1: item id '²'"):
        load_preprocessed(_write(tmp_path / "d", "1 ²\n", "1\t2\n"))
