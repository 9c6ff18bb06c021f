"""End to end: train tiny -> log -> register (champion) -> `mlflow models serve -m
models:/niser@champion --env-manager local` subprocess -> HTTP.

One server for the whole module. Every bad request of the serving contract gets a 4xx whose
message names the row (or param) and field, and a good request right after it still succeeds.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest
from mlflow import MlflowClient

from niser.pyfunc import EXAMPLE_REQUEST, MAX_SESSIONS

# The README's example, quoted verbatim there; PORT is the one `mlflow models serve -p` was given.
README_CURL = ("curl -s -X POST http://127.0.0.1:PORT/invocations "
               "-H 'Content-Type: application/json' "
               f"-d '{json.dumps(EXAMPLE_REQUEST)}'")


def post(base_url: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
    """POST JSON to /invocations; (status, decoded JSON or text) whatever the status."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{base_url}/invocations", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def base_url(registered_model_uri, serve_model) -> str:
    # other tests of the session may have registered a better version on the same data: make
    # this one the champion, as a user promotes a version, so @champion serves what we test
    client = MlflowClient()
    client.set_registered_model_alias("niser", "champion", registered_model_uri.rsplit("/", 1)[1])
    champion = client.get_model_version_by_alias("niser", "champion")
    assert f"models:/niser/{champion.version}" == registered_model_uri
    return serve_model("models:/niser@champion")


@pytest.fixture(scope="module")
def vocab(tiny_recommender) -> set[int]:
    return set(tiny_recommender.vocab.raw_ids.tolist())


def assert_good(base_url: str, vocab: set[int]) -> None:
    status, body = post(base_url, EXAMPLE_REQUEST)
    assert status == 200, body
    (pred,) = body["predictions"]
    assert len(pred["items"]) == EXAMPLE_REQUEST["params"]["k"] == 20
    assert set(pred["items"]) <= vocab and len(set(pred["items"])) == 20
    assert pred["scores"] == sorted(pred["scores"], reverse=True)
    assert pred["unknown_items"] == [] and pred["fallback"] is False


def test_readme_example_returns_top_20_raw_ids(base_url, vocab):
    assert_good(base_url, vocab)


def test_readme_curl_command_works(base_url, vocab):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install -y curl)")
    port = base_url.rsplit(":", 1)[1]
    out = subprocess.run(shlex.split(README_CURL.replace("PORT", port)), capture_output=True,
                         text=True, timeout=60, check=True)
    (pred,) = json.loads(out.stdout)["predictions"]
    assert len(pred["items"]) == 20 and set(pred["items"]) <= vocab


def test_split_format_with_unknown_and_fallback_rows(base_url, vocab, tiny_recommender):
    ids = [int(x) for x in tiny_recommender.vocab.raw_ids[:3]]
    body = {"dataframe_split": {"columns": ["session"],
                                "data": [[ids], [[ids[0], 3]], [[3, 4]], [[]]]},
            "params": {"k": 5}}
    status, out = post(base_url, body)
    assert status == 200, out
    rows = out["predictions"]
    assert [r["fallback"] for r in rows] == [False, False, True, True]
    assert [r["unknown_items"] for r in rows] == [[], [3], [3, 4], []]
    expected = tiny_recommender.recommend([ids, [ids[0]], [], []], 5)
    assert [r["items"] for r in rows] == [e.items for e in expected]
    assert all(len(r["items"]) == 5 and set(r["items"]) <= vocab for r in rows)


def records(*sessions: Any, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataframe_records": [{"session": s} for s in sessions]}
    if params:
        body["params"] = params
    return body


BAD_REQUESTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "missing session column": ({"dataframe_records": [{"sessions": [100000]}]},
                               ["row 0", "field 'session'", "missing"]),
    "session not a list": (records([100000], 100007), ["row 1", "field 'session'", "100007"]),
    "session null": (records([100000], None), ["row 1", "field 'session'", "None"]),
    "string id": (records([100000, "100007"]), ["row 0", "field 'session'", "'100007'"]),
    "float id with fraction": (records([100000], [100000], [1.5]),
                               ["row 2", "field 'session'", "1.5"]),
    "float id": (records([100000.0]), ["row 0", "field 'session'", "100000.0"]),
    "bool id": (records([True]), ["row 0", "field 'session'", "True"]),
    "negative id": (records([1], [2], [3], [100000, -5]),
                    ["row 3", "field 'session'", "item id -5 is not a positive integer"]),
    "zero id": (records([0]), ["row 0", "field 'session'", "item id 0"]),
    "k zero": (records([100000], k=0), ["'k'", "0", "1..1000"]),
    "k too large": (records([100000], k=1001), ["'k'", "1001", "1..1000"]),
    "k negative": (records([100000], k=-3), ["'k'", "-3"]),
    "k float": (records([100000], k=2.5), ["'k'", "2.5"]),
    "k string": (records([100000], k="20"), ["'k'", "20"]),
    "too many sessions": (records(*[[100000]] * (MAX_SESSIONS + 1)),
                          ["row 10000", "field 'session'", "10001 sessions"]),
    "empty request": ({"dataframe_records": []}, ["field 'session'"]),
    "empty split": ({"dataframe_split": {"columns": ["session"], "data": []}},
                    ["row 0", "field 'session'", "no sessions"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_naming_row_and_field_then_server_still_serves(base_url, vocab,
                                                                           case):
    body, fragments = BAD_REQUESTS[case]
    status, out = post(base_url, body)
    assert 400 <= status < 500, (status, out)
    assert isinstance(out, dict) and "message" in out, out
    for fragment in fragments:
        assert fragment in out["message"], (fragment, out["message"][-400:])
    assert_good(base_url, vocab)


def test_malformed_json_gets_4xx_and_server_still_serves(base_url, vocab):
    status, _ = post(base_url, b'{"dataframe_records": [{"session": [1, 2}')
    assert 400 <= status < 500
    assert_good(base_url, vocab)
