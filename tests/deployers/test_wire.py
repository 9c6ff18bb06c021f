"""The scoring wire format: one encoder and one decoder for every invoker and target."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from deployers import wire
from deployers.base import Prediction

DEPLOYERS = Path(__file__).resolve().parents[2] / "deployers"


def test_request_body_follows_the_serving_contract() -> None:
    assert json.loads(wire.encode_request([[3, 1], [7]], 5)) == {
        "dataframe_records": [{"session": [3, 1]}, {"session": [7]}], "params": {"k": 5}}


@pytest.mark.parametrize("inputs", [
    {"dataframe_records": [{"session": [3, 1]}, {"session": [7]}], "params": {"k": 5}},
    {"dataframe_split": {"columns": ["session"], "data": [[[3, 1]], [[7]]]}, "params": {"k": 5}},
])
def test_request_read_back_from_records_and_split(inputs: dict) -> None:
    assert wire.decode_request(inputs) == ([[3, 1], [7]], 5)


def test_request_read_from_a_frame_or_a_list_takes_the_default_k() -> None:
    assert wire.decode_request(pd.DataFrame({"session": [[1, 2]]})) == ([[1, 2]], 20)
    assert wire.decode_request([[4]]) == ([[4]], 20)


@pytest.mark.parametrize(("inputs", "fragment"), [
    ({"instances": [[1]]}, "'dataframe_records' or 'dataframe_split'"),
    (pd.DataFrame({"items": [[1]]}), "need a 'session' column"),
    (42, "inputs of type int"),
])
def test_unreadable_request_says_what_is_missing(inputs: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        wire.decode_request(inputs)


def test_answer_decoded_into_a_prediction() -> None:
    payload = {"predictions": [{"items": [5, 6], "scores": [0.9, 0.1], "fallback": False}]}
    pred = wire.decode_response(payload, 1)
    assert (pred.items, pred.scores, pred.raw) == ([[5, 6]], [[0.9, 0.1]], payload)
    assert wire.response_rows(pred) == payload["predictions"]
    assert wire.response_rows(Prediction([[1]], [[0.5]])) == [{"items": [1], "scores": [0.5]}]


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"outputs": []}, "no 'predictions' list"),
    ({"predictions": []}, "0 predictions for 1 sessions"),
    ({"predictions": [{"items": [1]}]}, "lacks 'items'/'scores'"),
])
def test_answer_not_in_the_contract_is_refused(payload: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        wire.decode_response(payload, 1)


def test_the_request_shape_is_written_in_one_place() -> None:
    """Only deployers/wire.py spells the request's keys (docstrings aside)."""
    spelled = [str(p.relative_to(DEPLOYERS)) for p in DEPLOYERS.rglob("*.py")
               if p.name != "wire.py" and '"dataframe_records"' in p.read_text()]
    assert spelled == []
