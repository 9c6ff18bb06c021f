"""A local deployment with ``server="litserve"``: the same pyfunc behind LitServe's batching."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import psutil
import pytest

from deployers.base import SettingsError
from deployers.local import LocalDeployer
from deployers.local import settings as local_settings

pytest.importorskip("litserve", reason="the litserve extra is not installed")
from deployers.local import litserve_app  # after the skip: it needs litserve

SESSIONS = [[100_000, 100_007, 100_014], [100_021], [100_035, 100_000], [999_999_999]]


def _in_process(model_uri: str, sessions: list[list[int]], k: int) -> list[dict[str, object]]:
    rows = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"session": sessions}), params={"k": k})
    return json.loads(json.dumps(list(rows)))


def _post(url: str | None, body: bytes) -> tuple[int, bytes]:
    parts = urlsplit(url or "")
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class _Model:
    """Records each ``predict`` call's sessions and params; answers one row per session;
    refuses a session holding ``fail_on``, and any call of more than ``max_rows`` sessions."""

    def __init__(self, fail_on: int | None = None, max_rows: int = 1000) -> None:
        self.calls: list[tuple[list[list[int]], object]] = []
        self.fail_on, self.max_rows = fail_on, max_rows

    def predict(self, df: pd.DataFrame, params: dict[str, int] | None) -> list[dict[str, object]]:
        sessions = [list(s) for s in df["session"]]
        self.calls.append((sessions, params))
        if self.fail_on is not None and any(self.fail_on in s for s in sessions):
            raise mlflow.exceptions.MlflowException(f"item {self.fail_on} refused")
        if len(sessions) > self.max_rows:
            raise mlflow.exceptions.MlflowException(f"{len(sessions)} sessions: too many")
        k = (params or {}).get("k", 20)
        return [{"items": s[:k], "k": k} for s in sessions]


def test_a_batch_runs_one_model_call_per_params_and_hands_each_request_its_own_rows() -> None:
    model = _Model()
    requests = [([[1, 2], [3]], {"k": 5}), ([[4]], {"k": 1}), ([[5, 6, 7]], {"k": 5}),
                ([[8]], None)]
    out = litserve_app.answer_batch(model, requests)
    assert model.calls == [([[1, 2], [3], [5, 6, 7]], {"k": 5}), ([[4]], {"k": 1}),
                           ([[8]], None)]
    assert out == [[{"items": [1, 2], "k": 5}, {"items": [3], "k": 5}],
                   [{"items": [4], "k": 1}], [{"items": [5, 6, 7], "k": 5}],
                   [{"items": [8], "k": 20}]]


def test_a_merged_call_the_model_refuses_is_retried_request_by_request() -> None:
    model = _Model(max_rows=2)  # each request alone is within the limit, the merge is not
    requests = [([[1], [2]], {"k": 3}), ([[3], [4]], {"k": 3})]
    out = litserve_app.answer_batch(model, requests)
    assert out == [[{"items": [1], "k": 3}, {"items": [2], "k": 3}],
                   [{"items": [3], "k": 3}, {"items": [4], "k": 3}]]
    assert [len(s) for s, _ in model.calls] == [4, 2, 2]


def test_a_refused_input_is_a_400_naming_why() -> None:
    from fastapi import HTTPException

    for requests in ([([[9]], {"k": 3})], [([[1]], {"k": 3}), ([[9]], {"k": 3})]):
        with pytest.raises(HTTPException) as err:
            litserve_app.answer_batch(_Model(fail_on=9), requests)
        assert err.value.status_code == 400 and "item 9 refused" in str(err.value.detail)


@pytest.mark.parametrize("body, fragment", [
    ([[1, 2]], "JSON object"), ({"instances": [1]}, "dataframe_records"),
    ({"dataframe_records": [{"sesion": [1]}]}, "session"),
    ({"dataframe_split": {"columns": ["x"], "data": [[1]]}}, "session")])
def test_a_body_without_the_wire_formats_fields_is_a_400_naming_them(body, fragment) -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        litserve_app.read_request(body)
    assert err.value.status_code == 400 and fragment in str(err.value.detail)


def test_values_reach_the_model_as_sent_for_it_to_check() -> None:
    body = {"dataframe_split": {"columns": ["session"], "data": [["12"], [[1, 2]]]},
            "params": {"k": 5.9}}
    assert litserve_app.read_request(body) == (["12", [1, 2]], {"k": 5.9})


def test_a_zero_window_or_a_batch_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_timeout_s"):
        litserve_app.PyfuncAPI("models:/m/1", 8, 0.0)
    with pytest.raises(ValueError, match="max_batch"):
        litserve_app.PyfuncAPI("models:/m/1", 1, 0.001)
    with pytest.raises(SettingsError, match="litserve_max_batch"):
        LocalDeployer().parse_settings({"server": "litserve", "litserve_max_batch": 1})


def test_litserve_missing_is_refused_before_anything_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_settings.importlib.util.find_spec
    monkeypatch.setattr(local_settings.importlib.util, "find_spec",
                        lambda name, *a: None if name == "litserve" else real(name, *a))
    deployer = LocalDeployer(state_dir=tmp_path / "state")
    with pytest.raises(SettingsError, match="niser-mlops\\[litserve\\]"):
        deployer.deploy("models:/whatever/1", {"server": "litserve", "workers": 1})
    assert deployer.list() == []


@pytest.mark.slow
def test_litserve_answers_as_the_pyfunc_does_concurrently_and_teardown_ends_it(
        tmp_path: Path, registered_model_uri: str) -> None:
    deployer = LocalDeployer(state_dir=tmp_path / "state")
    ep = deployer.deploy(registered_model_uri, {"server": "litserve", "workers": 1,
                                                "torch_threads": 1, "litserve_max_batch": 8,
                                                "litserve_batch_timeout_ms": 5})
    try:
        pids = [s["process"]["pid"] for s in deployer._load(ep.name)["servers"]]
        tree = [p.pid for p in psutil.Process(pids[0]).children(recursive=True)] + pids
        assert len(tree) >= 3  # LitServe's inference worker and HTTP server, under the server
        results: dict[int, tuple[int, bytes]] = {}

        def call(k: int) -> None:
            body = json.dumps({"dataframe_records": [{"session": s} for s in SESSIONS],
                               "params": {"k": k}}).encode()
            results[k] = _post(ep.url, body)

        threads = [threading.Thread(target=call, args=(k,)) for k in (3, 7, 11)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in (3, 7, 11):
            status, body = results[k]
            assert status == 200, body
            assert json.loads(body)["predictions"] == _in_process(registered_model_uri,
                                                                  SESSIONS, k)
        status, body = _post(ep.url, b'{"dataframe_records": [{"sesion": [1]}]}')
        assert status == 400 and b"session" in body
        status, body = _post(ep.url, b'{"dataframe_records": [{"session": [1]}], '
                                     b'"params": {"k": 0}}')
        assert status == 400 and b"k" in body  # the pyfunc's own check, as sent
        answer = ep.invoke([[100_000, 100_007]], k=5)
        assert len(answer.items[0]) == 5
    finally:
        deployer.teardown(ep.name)
    assert not any(psutil.pid_exists(p) for p in tree)  # its workers ended too
