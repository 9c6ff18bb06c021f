"""Target specs and the recording of Lambda REPORT figures."""

from __future__ import annotations

import pytest

from bench.answers import AnswerSample
from bench.targets import RecordingInvoker, validate_targets
from deployers.base import Prediction


def test_recording_invoker_counts_cold_starts_and_init_durations():
    answers = iter([{"duration_ms": 3.0, "billed_ms": 4.0, "init_ms": 550.0},
                    {"duration_ms": 2.0, "billed_ms": 2.0},
                    {"duration_ms": 2.0, "billed_ms": 3.0, "init_ms": 650.0}])

    def invoke(sessions: list[list[int]], k: int = 20) -> Prediction:
        return Prediction([[1]], [[1.0]], raw={"lambda_report": next(answers)})

    rec = RecordingInvoker(invoke)
    for _ in range(3):
        assert rec([[7]], 1).items == [[1]]
    assert rec.metrics() == {"requests_sent": 3.0, "lambda_reports": 3.0,
                             "lambda_cold_starts": 2.0, "lambda_init_ms_mean": 600.0,
                             "lambda_init_ms_max": 650.0, "lambda_billed_ms_mean": 3.0,
                             "lambda_duration_ms_mean": pytest.approx(7 / 3)}


def test_recording_invoker_counts_only_requests_for_other_targets():
    rec = RecordingInvoker(lambda sessions, k=20: Prediction([[1]], [[1.0]], raw={"x": 1}))
    rec([[1]])
    rec([[2]])
    assert rec.metrics() == {"requests_sent": 2.0}


def test_recording_invoker_offers_its_answers_to_the_sample() -> None:
    sample = AnswerSample(every=2)
    rec = RecordingInvoker(lambda sessions, k=20: Prediction([[s[0]] for s in sessions],
                                                             [[1.0]] * len(sessions)), sample)
    for i in range(4):
        rec([[i]], 1)
    assert [(batch, k, answer.items) for batch, k, answer in sample.kept] == [
        ([[1]], 1, [[1]]), ([[3]], 1, [[3]])]


def test_validate_targets_refuses_duplicates_and_bad_settings():
    with pytest.raises(ValueError, match="unique"):
        validate_targets([{"name": "a", "deployer": "inprocess"}] * 2)
    with pytest.raises(ValueError, match="workers"):
        validate_targets([{"name": "a", "deployer": "local", "settings": {"workers": 0}}])
    with pytest.raises(ValueError, match="name"):
        validate_targets([{"name": "bad name!", "deployer": "local"}])
