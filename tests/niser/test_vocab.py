"""Vocabulary: raw item id <-> index 1..N."""

from __future__ import annotations

import numpy as np
import pytest

from niser.vocab import Vocabulary


def test_round_trip_raw_to_index_and_back():
    vocab = Vocabulary([100007, 100000, 100021])
    known, unknown = vocab.encode([100021, 100007, 100000, 100007])
    assert known == [3, 1, 2, 1]
    assert unknown == []
    assert vocab.decode(known).tolist() == [100021, 100007, 100000, 100007]
    assert vocab.decode(np.array([[1, 2], [3, 3]])).tolist() == [[100007, 100000], [100021, 100021]]


def test_encode_reports_unknown_raw_ids_in_order_and_keeps_known_ones():
    vocab = Vocabulary([5, 6])
    assert vocab.encode([7, 5, 8, 6, 7]) == ([1, 2], [7, 8, 7])
    assert 5 in vocab and 7 not in vocab
    with pytest.raises(KeyError):
        vocab.index(7)


def test_from_sessions_indexes_in_order_of_first_appearance():
    vocab = Vocabulary.from_sessions([[30, 10, 30], [20, 10]])
    assert vocab.raw_ids.tolist() == [30, 10, 20]
    assert [vocab.index(r) for r in (30, 10, 20)] == [1, 2, 3]
    assert len(vocab) == 3


def test_decode_rejects_padding_and_out_of_range_indices():
    vocab = Vocabulary([5, 6])
    for bad in ([0], [3]):
        with pytest.raises(IndexError, match=r"1\.\.2"):
            vocab.decode(bad)


def test_duplicate_raw_ids_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary([1, 2, 1])


def test_save_and_load_give_an_equal_vocabulary(tmp_path):
    vocab = Vocabulary([100014, 100000, 100007])
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.fingerprint() == vocab.fingerprint()
    assert loaded.encode([100007, 1]) == ([3], [1])
    assert Vocabulary([100000, 100014, 100007]) != vocab


def test_identity_maps_each_index_to_itself():
    vocab = Vocabulary.identity(4)
    assert vocab.encode([1, 4, 5]) == ([1, 4], [5])
    assert vocab.decode([2, 3]).tolist() == [2, 3]


def test_encode_batch_keeps_sessions_with_a_known_item_and_reports_unknowns():
    vocab = Vocabulary([50, 60, 70])
    batch = vocab.encode_batch([[60, 99], [98], [70, 50, 60]])
    assert batch.rows == [0, 2]
    assert batch.flat.tolist() == [2, 3, 1, 2]
    assert batch.offsets.tolist() == [0, 1, 4]
    assert batch.unknown == [[99], [98], []]
