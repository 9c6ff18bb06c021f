import threading

import numpy as np
import pytest

from bench.payloads import Payloads
from niser.data import Samples
from niser.vocab import Vocabulary


def _samples():
    prefixes = [[1, 2], [3], [2, 3, 4], [4, 1], [1], [2, 4], [3, 1, 2], [4]]
    return Samples.from_pairs(prefixes, [1] * len(prefixes)), prefixes


def test_from_samples_converts_indices_to_raw_ids():
    samples, prefixes = _samples()
    vocab = Vocabulary([101, 202, 303, 404])  # index i -> raw id 101 * i
    p = Payloads.from_samples(samples, vocab, seed=3)
    got = sorted(tuple(b[0]) for b in p.batches)
    want = sorted(tuple(101 * i for i in pre) for pre in prefixes)
    assert got == want


def test_batches_cycle_through_many_distinct_sessions():
    p = Payloads([[i] for i in range(1, 51)], batch_size=1, seed=0)
    first = [tuple(p.next_batch()[0]) for _ in range(50)]
    assert len(set(first)) == 50  # one full cycle without repeats
    assert tuple(p.next_batch()[0]) == first[0]  # then it cycles


def test_batches_have_the_batch_size_and_the_same_seed_gives_the_same_batches():
    a = Payloads([[i] for i in range(1, 21)], batch_size=4, seed=7)
    b = Payloads([[i] for i in range(1, 21)], batch_size=4, seed=7)
    c = Payloads([[i] for i in range(1, 21)], batch_size=4, seed=8)
    assert len(a) == 5 and all(len(x) == 4 for x in a.batches)
    assert a.batches == b.batches and a.batches != c.batches


def test_next_batch_is_thread_safe():
    p = Payloads([[i] for i in range(1, 1001)], seed=1)
    seen: list[int] = []
    lock = threading.Lock()

    def take():
        got = [p.next_batch()[0][0] for _ in range(250)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 1001))  # every batch handed out exactly once


def test_max_sessions_draws_a_subset():
    samples = Samples.from_pairs([[i % 4 + 1] for i in range(100)], [1] * 100)
    p = Payloads.from_samples(samples, Vocabulary.identity(4), max_sessions=10)
    assert len(p) == 10


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="batch_size"):
        Payloads([[1]], batch_size=0)
    with pytest.raises(ValueError, match="non-empty sessions"):
        Payloads([[1], []], batch_size=2)
    empty = Samples(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="empty"):
        Payloads.from_samples(empty, Vocabulary.identity(1))
