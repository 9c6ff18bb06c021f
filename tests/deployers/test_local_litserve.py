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
    """Records each ``predict`` call's sessions and k; answers one row per session."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[list[list[int]], int]] = []
        self.fail_on = fail_on

    def predict(self, df: pd.DataFrame, params: dict[str, int]) -> list[dict[str, object]]:
        sessions = [list(s) for s in df["session"]]
        self.calls.append((sessions, params["k"]))
        if self.fail_on is not None and any(self.fail_on in s for s in sessions):
            raise mlflow.exceptions.MlflowException(f"item {self.fail_on} refused")
        return [{"items": s[:params["k"]], "k": params["k"]} for s in sessions]


def test_a_batch_runs_one_model_call_per_k_and_hands_each_request_its_own_rows() -> None:
    model = _Model()
    requests = [([[1, 2], [3]], 5), ([[4]], 1), ([[5, 6, 7]], 5)]
    out = litserve_app.answer_batch(model, requests)
    assert model.calls == [([[1, 2], [3], [5, 6, 7]], 5), ([[4]], 1)]
    assert out == [[{"items": [1, 2], "k": 5}, {"items": [3], "k": 5}],
                   [{"items": [4], "k": 1}], [{"items": [5, 6, 7], "k": 5}]]


def test_a_refused_input_is_a_400_naming_why() -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        litserve_app.answer_batch(_Model(fail_on=9), [([[9]], 3)])
    assert err.value.status_code == 400 and "item 9 refused" in str(err.value.detail)


def test_a_zero_batching_window_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_timeout_s"):
        litserve_app.PyfuncAPI("models:/m/1", 8, 0.0)


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
        answer = ep.invoke([[100_000, 100_007]], k=5)
        assert len(answer.items[0]) == 5
    finally:
        deployer.teardown(ep.name)
    assert not any(psutil.pid_exists(p) for p in pids)
