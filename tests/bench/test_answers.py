"""The answer sample of a sweep and its comparison with a reference ranking."""

from __future__ import annotations

import threading

import pytest

from bench.answers import AnswerSample, ranking_problem
from deployers.base import Prediction


def test_rankings_may_differ_only_where_scores_tie() -> None:
    assert ranking_problem([1, 2, 3], [3.0, 2.0, 1.0], [1, 2, 3], [3.0, 2.0, 1.0]) is None
    assert ranking_problem([1, 2, 3], [3.0, 2.0, 2.0], [1, 3, 2], [3.0, 2.0, 2.0]) is None
    assert ranking_problem([1, 2, 3], [3.0, 2.0, 1.0], [1, 2, 9], [3.0, 2.0, 1.0]) is None  # last
    swapped = ranking_problem([1, 2, 3], [3.0, 2.0, 1.0], [2, 1, 3], [3.0, 2.0, 1.0])
    assert swapped is not None and "rank 0" in swapped
    off = ranking_problem([1, 2], [3.0, 2.0], [1, 2], [3.0, 2.5])
    assert off is not None and "scores differ" in off
    assert ranking_problem([1, 2], [3.0, 2.0], [1], [3.0]) is not None


def _reference(sessions: list[list[int]], k: int) -> Prediction:
    """Items counting down from the session's last id, scores 10, 9, ..."""
    return Prediction([[s[-1] - j for j in range(k)] for s in sessions],
                      [[10.0 - j for j in range(k)] for _ in sessions])


def test_sample_keeps_every_nth_answer_up_to_the_cap_from_many_threads() -> None:
    sample = AnswerSample(every=3, cap=50)

    def offer(n: int) -> None:
        for i in range(n):
            sample.offer([[100 + i]], 2, _reference([[100 + i]], 2))

    threads = [threading.Thread(target=offer, args=(60,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sample.kept) == 50  # 240 offered, every third is 80, capped at 50
    check = sample.check(_reference)
    assert (check.sessions, check.identical, check.ties_only, check.problem) == (50, 50, 0, None)


def test_check_counts_ties_and_names_the_first_real_difference() -> None:
    sample = AnswerSample(every=1)
    sample.offer([[50], [60]], 2, Prediction([[50, 49], [59, 60]], [[10.0, 9.0], [10.0, 9.0]]))
    sample.offer([[70]], 2, Prediction([[70, 1]], [[10.0, 9.0]]))  # last rank: may tie outside
    check = sample.check(_reference)
    assert check.sessions == 3 and check.identical == 1 and check.ties_only == 1
    assert check.problem is not None and "[60]" in check.problem and "rank 0" in check.problem
    assert "DIFFERS" in check.line()


def test_the_same_items_with_drifted_scores_are_not_counted_identical() -> None:
    sample = AnswerSample(every=1)
    sample.offer([[50]], 2, Prediction([[50, 49]], [[10.0, 8.0]]))  # rank 1 scored 8, not 9
    check = sample.check(_reference)
    assert check.identical == 0 and check.problem is not None and "scores differ" in check.problem


def test_sample_refuses_a_zero_period() -> None:
    with pytest.raises(ValueError, match="every and cap"):
        AnswerSample(every=0)
