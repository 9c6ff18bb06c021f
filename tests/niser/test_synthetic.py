"""The synthetic session generator: determinism, raw ids, and learnable sequential structure."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from niser.synthetic import RAW_ID_BASE, RAW_ID_STEP, SyntheticConfig, generate, generate_sessions

SMALL = SyntheticConfig(n_items=200, n_sessions=1500, seed=1)


def test_same_seed_gives_identical_data():
    a, b = generate(SMALL), generate(SyntheticConfig(n_items=200, n_sessions=1500, seed=1))
    assert a.fingerprint() == b.fingerprint()
    assert a.name == b.name == f"synthetic-{SMALL.digest()}"
    assert generate().name == "synthetic"


def test_different_seeds_give_different_data():
    a = generate(SMALL)
    b = generate(SMALL.model_copy(update={"seed": 2}))
    assert a.train.fingerprint() != b.train.fingerprint()
    assert a.vocab != b.vocab
    assert a.name != b.name


def test_raw_ids_are_not_indices_and_map_back():
    data = generate(SMALL)
    raw = data.vocab.raw_ids
    assert raw.min() >= RAW_ID_BASE
    assert np.all((raw - RAW_ID_BASE) % RAW_ID_STEP == 0)
    assert data.n_items <= SMALL.n_items
    sessions = generate_sessions(SMALL)
    first = sessions[0]  # the first training session, indexed in order of first appearance
    known, unknown = data.vocab.encode(first.tolist())
    assert unknown == []
    assert data.train.session(len(first) - 2) == known[:-1]
    assert data.train.targets[len(first) - 2] == known[-1]


def test_lengths_and_split_follow_the_config():
    config = SyntheticConfig(n_items=100, n_sessions=1000, mean_length=4.0, max_length=8,
                             test_fraction=0.3, seed=3)
    sessions = generate_sessions(config)
    lengths = np.array([len(s) for s in sessions])
    assert lengths.min() >= 2 and lengths.max() == 8
    assert 3.0 < lengths.mean() < 4.0  # mean 4 before the cap at 8
    data = generate(config)
    assert data.train.lengths.max() <= 7
    n_train_clicks = lengths[:700].sum()
    assert len(data.train) == n_train_clicks - 700
    assert 0.2 < len(data.test) / (len(data.train) + len(data.test)) < 0.4


def test_most_frequent_successor_predicts_the_next_click_far_better_than_popularity():
    data = generate()
    n = data.n_items + 1
    train, test = data.train, data.test
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (train.items[train.offsets[1:] - 1], train.targets), 1)
    best_successor = counts.argmax(axis=1)
    last_clicks = test.items[test.offsets[1:] - 1]
    successor_hits = float(np.mean(best_successor[last_clicks] == test.targets))
    most_popular = np.bincount(train.targets, minlength=n).argmax()
    popularity_hits = float(np.mean(test.targets == most_popular))
    assert successor_hits > 0.3
    assert successor_hits > 4 * popularity_hits


def test_popularity_is_long_tailed():
    data = generate()
    clicks = np.sort(np.bincount(data.train.items, minlength=data.n_items + 1)[1:])[::-1]
    top_decile = clicks[: len(clicks) // 10].sum() / clicks.sum()
    assert top_decile > 0.3  # a uniform catalogue would give 0.1


@pytest.mark.parametrize(
    "bad",
    [{"colour": "red"}, {"n_items": 4, "successors_per_item": 4}, {"jump_probability": 1.5},
     {"mean_length": 2.0}, {"test_fraction": 1.0}],
)
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        SyntheticConfig(**bad)
