"""The payload mix: weights split as Power Tuning splits them, classes from length quantiles,
one class per invocation, and the same mix for the same seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bench.power_tune_mix import MIX_CLASSES, PayloadMix, SessionClass, class_counts


def sessions_of_lengths(lengths: list[int]) -> list[list[int]]:
    """Session ``i`` has ``lengths[i]`` items, all ``1000 + i`` (so a session names itself)."""
    return [[1000 + i] * n for i, n in enumerate(lengths)]


# 100 sessions, lengths 1..10 ten times each: Q(0.25) = 3, Q(0.40) = 4, Q(0.60) = 6, Q(0.90) = 9
LENGTHS = [n for n in range(1, 11) for _ in range(10)]


def test_counts_follow_power_tunings_floor_rule_with_the_remainder_last():
    assert class_counts([0.5, 0.3, 0.2], 50) == [25, 15, 10]
    assert class_counts([0.5, 0.3, 0.2], 7) == [3, 2, 2]  # floor(3.5), floor(2.1), rest
    assert class_counts([5, 3, 2], 10) == [5, 3, 2]  # relative weights, not percentages


def test_too_few_invocations_for_a_class_are_refused_with_the_minimum():
    with pytest.raises(ValueError, match="at least 5 invocations"):
        class_counts([0.5, 0.3, 0.2], 4)  # floor(0.8) = 0 for long, remainder or not
    assert class_counts([0.5, 0.3, 0.2], 5) == [2, 1, 2]
    with pytest.raises(ValueError, match="positive"):
        class_counts([0.5, 0.0], 10)


def test_the_default_weights_are_half_short_three_tenths_median_a_fifth_long():
    assert [(c.name, c.weight) for c in MIX_CLASSES] == [("short", 0.5), ("median", 0.3),
                                                         ("long", 0.2)]


def test_classes_are_cut_at_the_length_quantiles_of_the_sessions():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=4, invocations=50, seed=0)
    assert mix.bounds == {"short": (None, 3), "median": (4, 6), "long": (9, None)}
    allowed = {"short": range(1, 4), "median": range(4, 7), "long": range(9, 11)}
    for payload in mix.payloads:
        assert all(len(s) in allowed[payload.session_class] for s in payload.sessions)
    assert mix.describe() == ("short 50% (len <= 3), median 30% (4 <= len <= 6), "
                              "long 20% (len >= 9)")


def test_invocations_split_by_weight_and_each_carries_one_batch():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=4, invocations=50, seed=0)
    assert Counter(p.session_class for p in mix.payloads) == {"short": 25, "median": 15,
                                                              "long": 10}
    assert {len(p.sessions) for p in mix.payloads} == {4}


def test_the_same_seed_gives_the_same_mix_and_another_seed_another():
    pool = sessions_of_lengths(LENGTHS)
    a = PayloadMix.build(pool, batch=4, invocations=20, seed=7)
    b = PayloadMix.build(pool, batch=4, invocations=20, seed=7)
    c = PayloadMix.build(pool, batch=4, invocations=20, seed=8)
    assert a.payloads == b.payloads
    assert a.payloads != c.payloads


def test_classes_interleave_in_sending_order():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=2, invocations=50, seed=0)
    labels = [p.session_class for p in mix.payloads]
    assert labels != sorted(labels, key=["short", "median", "long"].index)


def test_a_batch_repeats_no_session_while_its_class_has_enough():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=20, invocations=10, seed=0)
    for p in mix.payloads:
        if p.session_class != "long":  # 30 short and 30 median sessions; 20 long
            assert len({s[0] for s in p.sessions}) == 20


def test_a_class_smaller_than_the_batch_is_drawn_with_replacement():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=50, invocations=5, seed=0)
    long = [p for p in mix.payloads if p.session_class == "long"]
    assert long and all(len(p.sessions) == 50 for p in long)


def test_heaviest_is_the_payload_with_most_clicks():
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=4, invocations=20, seed=0)
    heaviest = mix.heaviest()
    assert heaviest.session_class == "long"
    assert heaviest.clicks == max(p.clicks for p in mix.payloads)


def test_few_distinct_lengths_let_classes_share_sessions():
    # 80 % of the sessions have one click: Q(0.25) = Q(0.40) = Q(0.60) = 1, Q(0.90) = 2
    mix = PayloadMix.build(sessions_of_lengths([1] * 80 + [2] * 10 + [5] * 10), batch=3,
                           invocations=10, seed=0)
    assert mix.bounds == {"short": (None, 1), "median": (1, 1), "long": (2, None)}


def test_empty_pools_and_zero_batches_are_refused():
    with pytest.raises(ValueError, match="no non-empty sessions"):
        PayloadMix.build([[], []], batch=1, invocations=5)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        PayloadMix.build([[1]], batch=0, invocations=5)


def test_custom_classes_take_their_own_quantiles():
    halves = (SessionClass("low", 1, None, 0.5), SessionClass("high", 1, 0.5, None))
    mix = PayloadMix.build(sessions_of_lengths(LENGTHS), batch=2, invocations=4, seed=0,
                           classes=halves)
    assert mix.bounds == {"low": (None, 5), "high": (5, None)}


def test_from_samples_sends_raw_item_ids_of_the_test_prefixes():
    from niser.data import Samples
    from niser.vocab import Vocabulary

    samples = Samples.from_pairs([[1], [1, 2], [2, 3, 1], [3]], [2, 3, 2, 1])
    vocab = Vocabulary(np.array([100, 200, 300]))  # index i -> raw id 100 * i
    mix = PayloadMix.from_samples(samples, vocab, batch=2, invocations=5, seed=0)
    sent = {item for p in mix.payloads for s in p.sessions for item in s}
    assert sent <= {100, 200, 300}
