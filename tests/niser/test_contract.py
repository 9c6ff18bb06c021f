"""The serving contract's rules (niser.contract) and the scoring-server guard built on them."""

from __future__ import annotations

import base64
import json
from collections import namedtuple
from typing import Any

import pytest

from niser import contract, serving_guard
from niser.contract import RequestError, decode_body, event_request, parse_request


def records(*sessions: Any, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataframe_records": [{"session": s} for s in sessions]}
    if params:
        body["params"] = params
    return body


def refused(body: Any) -> str:
    with pytest.raises(RequestError) as err:
        parse_request(body)
    return str(err.value)


def test_a_good_body_gives_sessions_and_k_in_both_forms():
    assert parse_request(records([1, 2], [3], k=5)) == ([[1, 2], [3]], 5)
    split = {"dataframe_split": {"columns": ["user", "session"], "index": [7, 8],
                                 "data": [["a", [1, 2]], ["b", []]]}}
    assert parse_request(json.dumps(split).encode()) == ([[1, 2], []], contract.DEFAULT_K)


def test_a_session_longer_than_the_cap_is_refused_naming_its_length_and_the_cap():
    message = refused(records([1] * (contract.MAX_SESSION_IDS + 1)))
    assert f"{contract.MAX_SESSION_IDS + 1} item ids" in message
    assert f"{contract.MAX_SESSION_IDS} allowed" in message


def test_sessions_times_k_over_the_answer_cap_is_refused_naming_both_numbers():
    n = contract.MAX_ANSWER_ITEMS // 1000 + 1
    message = refused(records(*[[1]] * n, k=1000))
    assert f"{n} sessions x k=1000" in message and str(contract.MAX_ANSWER_ITEMS) in message


def test_too_many_ids_in_one_request_are_refused():
    n = contract.MAX_REQUEST_IDS // contract.MAX_SESSION_IDS + 1
    message = refused(records(*[[1] * contract.MAX_SESSION_IDS] * n, k=1))
    assert str(contract.MAX_REQUEST_IDS) in message


@pytest.mark.parametrize(("body", "fragment"), [
    ({**records([1]), "dataframe_split": {"columns": ["session"], "data": [[[1]]]}}, "both"),
    ({"dataframe_split": {"columns": ["session"], "index": [0, 1], "data": [[[1]]]}},
     "one entry per row"),
    ({"dataframe_split": {"columns": ["session", "session"], "data": [[[1], [1]]]}},
     "exactly once"),
    ({"dataframe_split": {"columns": ["session"], "data": [[[1]]], "dtype": "x"}}, "'dtype'"),
    (records([1], kk=5), "unknown key 'kk'; the valid keys are ['k']"),
    ({**records([1]), "extra": 1}, "unknown top-level key 'extra'"),
    ({"dataframe_records": [{"session": [1], "x": [[1]]}]}, "must hold a scalar"),
    ({"dataframe_split": {"columns": ["x", "session"], "data": [[{"a": 1}, [1]]]}},
     "row 0, field 'x'"),
    ({"instances": [[1]]}, "needs 'dataframe_records' or 'dataframe_split'"),
    (records([1], k=10**30), "param 'k'"),
])
def test_structural_breaches_are_refused_with_a_message_naming_them(body, fragment):
    assert fragment in refused(body)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"dataframe_records": [{"session": [1]}], "x": "\xff"}', "not UTF-8"),
    (json.dumps(records([1])).encode("utf-16"), "not UTF-8"),
    (b"\xef\xbb\xbf" + json.dumps(records([1])).encode(), "byte-order mark"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"dataframe_records": [{"session": [' + b"9" * 5000 + b"]}]}", "4300 digits"),
    (b'{"dataframe_records": [{"session": [NaN]}]}', "NaN"),
    (b'{"dataframe_records": [{"session": [1]}] /* x */}', "not valid JSON"),
    (b"", "empty"),
    (b"  \n", "empty"),
    (b"42", "must be a JSON object"),
])
def test_every_kind_of_parse_failure_is_a_request_error(raw, fragment):
    assert fragment in refused(raw)


def test_messages_never_echo_more_than_a_few_characters_of_the_input():
    secret = "x" * 5000
    message = refused(records([secret]))
    assert len(message) < 400 and secret not in message


@pytest.mark.parametrize(("event", "fragment"), [
    ({"body": "!!!", "isBase64Encoded": True}, "not valid base64"),
    ({"body": "{}", "isBase64Encoded": "true"}, "'isBase64Encoded'"),
    ({"body": 5}, "field 'body'"),
    ({"body": None}, "empty"),
])
def test_a_malformed_lambda_event_is_a_request_error_naming_the_field(event, fragment):
    with pytest.raises(RequestError, match=fragment):
        event_request(event)


def test_a_base64_gateway_event_decodes_to_the_request_and_a_direct_event_is_itself():
    body = records([1, 2], k=3)
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    assert event_request({"body": encoded, "isBase64Encoded": True}) == body
    assert event_request(body) is body
    assert decode_body(json.dumps(body)) == body


Response = namedtuple("Response", "response status mimetype")


def _guard(original: Any) -> Any:
    return serving_guard.guarded(original, Response)


def _ok(data: Any, content_type: str, model: Any, schema: Any) -> Response:
    return Response(json.dumps({"got": data}), 200, "application/json")


@pytest.mark.parametrize("content_type", ["application/json", "APPLICATION/JSON",
                                          "Application/Json; Charset=UTF-8",
                                          'application/json; charset="utf-8"'])
def test_the_guard_accepts_json_in_any_case_and_hands_on_the_decoded_body(content_type):
    body = records([1], k=2)
    answer = _guard(_ok)(json.dumps(body).encode(), content_type, None, None)
    assert answer.status == 200 and json.loads(answer.response) == {"got": body}


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/json; charset=latin-1",
                                          "application/jsonx", "text/csv"])
def test_the_guard_answers_another_content_type_with_415_naming_the_accepted_one(content_type):
    answer = _guard(_ok)(b"{}", content_type, None, None)
    assert answer.status == 415
    assert "application/json" in json.loads(answer.response)["message"]


def test_the_guard_answers_a_contract_breach_with_400_before_mlflow_runs():
    def never(*args: Any) -> Response:
        raise AssertionError("MLflow's parsing ran")

    answer = _guard(never)(b'{"dataframe_records": [{"session": ["1"]}]}', "application/json",
                           None, None)
    assert answer.status == 400
    assert "row 0, field 'session'" in json.loads(answer.response)["message"]


class _MlflowLike(Exception):
    error_code = "INVALID_PARAMETER_VALUE"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def get_http_status_code(self) -> int:
        return 400


def test_the_guard_strips_mlflows_echo_and_traceback_and_cuts_long_errors():
    def echoes(*args: Any) -> Response:
        raise _MlflowLike("Failed to predict data '" + "y" * 10_000 + "'. \nError: bad thing")

    answer = _guard(echoes)(json.dumps(records([1])).encode(), "application/json", None, None)
    assert answer.status == 400
    assert json.loads(answer.response) == {"error_code": "INVALID_PARAMETER_VALUE",
                                           "message": "bad thing"}

    def crashes(*args: Any) -> Response:
        raise RuntimeError("secret detail " + "z" * 10_000)

    answer = _guard(crashes)(json.dumps(records([1])).encode(), "application/json", None, None)
    assert answer.status == 500 and "RuntimeError" in answer.response
    assert "secret" not in answer.response

    def long_text(*args: Any) -> Response:
        return Response("w" * 100_000, 400, "text/plain")

    answer = _guard(long_text)(json.dumps(records([1])).encode(), "application/json", None, None)
    assert answer.status == 400 and len(answer.response) <= serving_guard.MAX_ERROR_BYTES


def test_the_guard_installs_only_in_a_scoring_server_process(monkeypatch):
    import mlflow.pyfunc.scoring_server as server

    monkeypatch.delenv("__pyfunc_model_path__", raising=False)
    assert serving_guard.install() is False
    original = server.invocations
    monkeypatch.setattr(server, "invocations", original)  # restored after the test
    monkeypatch.setenv("__pyfunc_model_path__", "/tmp/model")
    assert serving_guard.install() is True
    assert server.invocations is not original and server.invocations.niser_guard is original
    # a second install wraps MLflow's function again, never the guard: one layer only
    assert serving_guard.install(lean=True) is True
    assert server.invocations.niser_guard is original and server.invocations.niser_lean


class _Served:
    """A stand-in for the ``PyFuncModel`` the server passes: unwraps to ``python_model``."""

    def __init__(self, python_model: Any) -> None:
        self.python_model = python_model

    def unwrap_python_model(self) -> Any:
        return self.python_model


def test_the_lean_path_answers_a_sound_request_with_the_passed_models_answer():
    def never(*args: Any) -> Response:
        raise AssertionError("MLflow's path ran")

    seen = []

    class Answers:
        def answer(self, sessions: list[list[int]], k: int) -> list[dict[str, Any]]:
            seen.append((sessions, k))
            return [{"items": [7][:k], "scores": [0.5], "unknown_items": [], "fallback": False}
                    for _ in sessions]

    guard = serving_guard.guarded(never, Response, lean=True)
    model = _Served(Answers())
    out = guard(json.dumps(records([1, 2], [3], k=4)).encode(), "application/json", model, None)
    assert out.status == 200 and seen == [([[1, 2], [3]], 4)]
    assert json.loads(out.response) == {"predictions": Answers().answer([[1, 2], [3]], 4)}
    assert guard(b'{"dataframe_records": [{"session": ["1"]}]}', "application/json", model,
                 None).status == 400 and len(seen) == 2  # a breach never reaches the answer


def test_the_lean_path_hands_a_model_without_answer_to_mlflows_path():
    guard = serving_guard.guarded(_ok, Response, lean=True)
    body = records([1], k=2)
    for model in (None, _Served(object())):
        out = guard(json.dumps(body).encode(), "application/json", model, None)
        assert out.status == 200 and json.loads(out.response) == {"got": body}

@pytest.mark.parametrize("value, lean", [(None, True), ("lean", True), (" MLflow ", False)])
def test_the_request_path_switch_reads_the_environment(value, lean):
    env = {} if value is None else {serving_guard.ENV_REQUEST_PATH: value}
    assert serving_guard.lean_path(env) is lean


def test_an_unknown_request_path_names_the_variable_and_value():
    with pytest.raises(ValueError, match="NISER_REQUEST_PATH='fast'"):
        serving_guard.lean_path({serving_guard.ENV_REQUEST_PATH: "fast"})
