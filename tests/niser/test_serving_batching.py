"""Opportunistic batching in the served pyfunc, end to end and in the pyfunc itself.

Two real ``mlflow models serve`` processes of the same registered model: batching as logged (on)
and batching off through the scoring server's environment (``NISER_BATCHING=0``, the local
deployer's ``environment`` setting), and a third on MLflow's own request path
(``NISER_REQUEST_PATH=mlflow``). Concurrent requests with different ``k``, one of them
malformed, each get their own answer; answered one at a time, all give the same bytes.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pandas as pd
import pytest
from mlflow.pyfunc.model import PythonModelContext

from niser import pyfunc
from niser.batching import BatchSettings

SCORE_ROUNDING = 1e-5  # float32 products of differently sized batches differ in the last bits


def post_raw(base_url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(f"{base_url}/invocations", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def servers(registered_model_uri, serve_model) -> dict[str, str]:
    return {"on": serve_model(registered_model_uri),
            "off": serve_model(registered_model_uri, environment={"NISER_BATCHING": "0"}),
            # MLflow's own request path (DataFrame, schema, pyfunc), not the guard's lean one
            "mlflow": serve_model(registered_model_uri, environment={
                "NISER_BATCHING": "0", "NISER_REQUEST_PATH": "mlflow"})}


@pytest.fixture(scope="module")
def bodies(tiny_recommender) -> list[bytes]:
    """Good requests of one to three sessions and k in 3, 7, 20."""
    import json

    ids = [int(x) for x in tiny_recommender.vocab.raw_ids[:40]]
    out = []
    for i in range(12):
        sessions = [ids[i:i + 1 + i % 4], ids[i + 5:i + 7]][: 1 + i % 2]
        out.append(json.dumps({"dataframe_records": [{"session": s} for s in sessions],
                               "params": {"k": (3, 7, 20)[i % 3]}}).encode())
    return out


def close_to(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same answer up to float32 rounding: equal items, or items swapped only among scores
    closer than the rounding; scores within it."""
    if len(a["scores"]) != len(b["scores"]) or a["fallback"] != b["fallback"]:
        return False
    if any(abs(x - y) > SCORE_ROUNDING for x, y in zip(a["scores"], b["scores"], strict=True)):
        return False
    for pos, (x, y) in enumerate(zip(a["items"], b["items"], strict=True)):
        if x != y and abs(a["scores"][pos] - b["scores"][pos]) > SCORE_ROUNDING:
            return False
    return a["unknown_items"] == b["unknown_items"]


def test_one_request_at_a_time_batching_off_and_on_answer_the_same_bytes(servers, bodies):
    for body in bodies:
        on, off = post_raw(servers["on"], body), post_raw(servers["off"], body)
        assert on[0] == off[0] == 200
        assert on[1] == off[1]


def test_the_lean_request_path_answers_the_same_bytes_as_mlflows_own(servers, bodies):
    for body in bodies:
        lean, theirs = post_raw(servers["off"], body), post_raw(servers["mlflow"], body)
        assert lean == theirs


def _both_paths(model_uri: str) -> tuple[Any, Any, Any]:
    """The served model and MLflow's ``invocations`` behind the guard, lean and MLflow's path."""
    import mlflow
    from mlflow.pyfunc.scoring_server import InvocationsResponse, invocations

    from niser.serving_guard import guarded

    model = mlflow.pyfunc.load_model(model_uri)
    return (model, guarded(invocations, InvocationsResponse, lean=True),
            guarded(invocations, InvocationsResponse))


def test_both_request_paths_give_the_same_status_and_bytes_for_varied_sound_bodies(
        registered_model_uri, tiny_recommender, monkeypatch):
    import json

    monkeypatch.setenv("NISER_BATCHING", "0")
    model, lean, theirs = _both_paths(registered_model_uri)
    from niser.serving_guard import answer_of

    assert answer_of(model) is not None  # the lean guard does answer through the model
    ids = [int(x) for x in tiny_recommender.vocab.raw_ids[:6]]
    n_items = tiny_recommender.model.n_items
    bodies: list[dict[str, Any]] = [
        {"dataframe_records": [{"session": ids[:3]}]},  # no params: k = 20
        {"dataframe_records": [{"session": ids[:2]}], "params": None},
        {"dataframe_records": [{"session": ids[:2]}], "params": {}},
        {"dataframe_records": [{"session": ids[:1]}], "params": {"k": n_items + 50}},
        {"dataframe_records": [{"session": []}, {"session": [999_999_999]}],
         "params": {"k": 3}},  # fallback, unknown ids
        {"dataframe_split": {"columns": ["session"], "data": [[ids[:2]], [ids[2:5]]]},
         "params": {"k": 5}},
        {"dataframe_split": {"columns": ["session"], "index": [7, 3],
                             "data": [[ids[:1]], [ids[1:2]]]}, "params": {"k": 1}},
        {"dataframe_records": [{"session": [ids[0], 2**63 - 1]}], "params": {"k": 4}},
    ]
    for body in bodies:
        raw = json.dumps(body).encode()
        a = lean(raw, "application/json", model, None)
        b = theirs(raw, "application/json", model, model.metadata.get_input_schema())
        assert (a.status, a.response) == (b.status, b.response), body
        assert a.status == 200, a.response


def test_a_failing_model_is_answered_alike_on_both_request_paths(
        registered_model_uri, tiny_recommender, monkeypatch):
    import json

    monkeypatch.setenv("NISER_BATCHING", "0")
    model, lean, theirs = _both_paths(registered_model_uri)

    def broken(sessions: list[list[int]], k: int) -> Any:
        raise RuntimeError("a detail that must not leak")

    model.unwrap_python_model()._recommend = broken
    raw = json.dumps({"dataframe_records": [
        {"session": [int(tiny_recommender.vocab.raw_ids[0])]}]}).encode()
    a = lean(raw, "application/json", model, None)
    b = theirs(raw, "application/json", model, model.metadata.get_input_schema())
    assert (a.status, a.response) == (b.status, b.response)
    assert a.status == 400 and "must not leak" not in a.response


def test_concurrent_callers_with_different_k_and_one_malformed_get_their_own_answers(
        servers, bodies):
    import json

    alone = [json.loads(post_raw(servers["off"], body)[1]) for body in bodies]
    bad = b'{"dataframe_records": [{"session": [1, -3]}], "params": {"k": 5}}'
    sent = [*bodies[:6], bad, *bodies[6:]]
    barrier = threading.Barrier(len(sent))

    def send(body: bytes) -> tuple[int, bytes]:
        barrier.wait(30)
        return post_raw(servers["on"], body)

    for _ in range(5):  # rounds of simultaneous requests, which the server may batch
        with ThreadPoolExecutor(len(sent)) as pool:
            answers = list(pool.map(send, sent))
        status, text = answers.pop(6)
        assert status == 400 and b"row 0, field 'session', position 1" in text
        assert b"-3" in text
        for (status, text), expected, body in zip(answers, alone, bodies, strict=True):
            assert status == 200, text
            got = json.loads(text)["predictions"]
            want = expected["predictions"]
            k = json.loads(body)["params"]["k"]
            assert len(got) == len(want) and all(len(g["items"]) == k for g in got)
            assert all(close_to(g, w) for g, w in zip(got, want, strict=True)), (got, want)


class FailingRecommender:
    """Wraps a Recommender; a call holding ``poison`` as a session raises, others are scored."""

    poison: ClassVar[list[int]] = [424242]

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = inner.model
        self.entered = threading.Event()
        self.gate = threading.Event()

    def recommend(self, sessions: list[list[int]], k: int) -> Any:
        self.entered.set()
        self.gate.wait(30)
        if self.poison in sessions:
            raise RuntimeError("model call failed")
        return self.inner.recommend(sessions, k)


def test_a_failing_model_call_fails_only_its_own_callers_and_the_model_keeps_serving(
        tiny_recommender):
    model = pyfunc.NiserModel()
    model.recommender = tiny_recommender
    fake = FailingRecommender(tiny_recommender)
    from niser.batching import Coalescer

    co = Coalescer(fake.recommend, max_sessions=64)
    model._recommend = co
    ids = [int(x) for x in tiny_recommender.vocab.raw_ids[:3]]

    def ask(sessions: list[list[int]], k: int) -> Any:
        try:
            return model.predict(None, pd.DataFrame({"session": sessions}), {"k": k})
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(ask, [ids], 5)  # runs alone, held in the model
        assert fake.entered.wait(30)
        poisoned = pool.submit(ask, [FailingRecommender.poison], 5)
        good_other_k = pool.submit(ask, [ids[:1]], 4)
        for _ in range(30_000):  # until both wait for the next batch (30 s at most)
            if co.queued == 2:
                break
            threading.Event().wait(0.001)
        assert co.queued == 2
        fake.gate.set()
        assert len(first.result(30)) == 1
        assert isinstance(poisoned.result(30), RuntimeError)
        assert len(good_other_k.result(30)[0]["items"]) == 4
    after = ask([ids], 5)
    assert after[0]["items"] == tiny_recommender.recommend([ids], 5)[0].items


def test_batching_settings_are_logged_as_model_config_and_read_at_load(
        tiny_recommender, tmp_path, monkeypatch):
    tiny_recommender.save(tmp_path / "rec")
    ctx = PythonModelContext(artifacts={pyfunc.ARTIFACT_KEY: str(tmp_path / "rec")},
                             model_config=BatchSettings(False, 8).model_config())
    model = pyfunc.NiserModel()
    model.load_context(ctx)
    assert model.batch_settings == BatchSettings(False, 8)
    monkeypatch.setenv("NISER_BATCHING", "1")
    model.load_context(ctx)
    assert model.batch_settings == BatchSettings(True, 8)
    monkeypatch.setenv("NISER_MAX_BATCH_SESSIONS", "zero")
    with pytest.raises(Exception, match="NISER_MAX_BATCH_SESSIONS"):
        model.load_context(ctx)


@pytest.mark.parametrize("path, lean", [(None, True), ("mlflow", False)])
def test_a_scoring_server_loading_the_model_answers_through_the_lean_path_unless_told_not(
        tiny_recommender, tmp_path, monkeypatch, path, lean):
    import mlflow.pyfunc.scoring_server as server

    tiny_recommender.save(tmp_path / "rec")
    ctx = PythonModelContext(artifacts={pyfunc.ARTIFACT_KEY: str(tmp_path / "rec")},
                             model_config=BatchSettings(True, 8).model_config())
    monkeypatch.setattr(server, "invocations", server.invocations)  # restored after the test
    monkeypatch.setenv("__pyfunc_model_path__", str(tmp_path))  # as in a scoring server
    if path is None:
        monkeypatch.delenv("NISER_REQUEST_PATH", raising=False)
    else:
        monkeypatch.setenv("NISER_REQUEST_PATH", path)
    model = pyfunc.NiserModel()
    model.load_context(ctx)
    assert server.invocations.niser_lean is lean
