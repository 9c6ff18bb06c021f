"""The hostile corpus (tests/hostile.py, over 300 requests) through the local deployer (nginx in
front of a real ``mlflow models serve``) and through the Lambda handler: no 5xx, no dropped
connection, every 4xx with a short message and no stack trace, the same status from both for
the same body, the good answer unchanged afterwards and the server's RSS growth under 25 %."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from deployers import ownership
from tests import hostile

pytestmark = pytest.mark.slow


def _rss_mb(name: str) -> float:
    total = 0
    for marked in ownership.marked_processes():
        if marked.deployment == name:
            try:
                top = psutil.Process(marked.pid)
                total += sum(p.memory_info().rss for p in [top, *top.children(recursive=True)])
            except psutil.Error:
                continue
    return total / 2**20


@pytest.fixture(scope="module")
def deployment(registered_model_uri, tmp_path_factory) -> Iterator[tuple[str, int, str]]:
    from deployers.local import LocalDeployer

    deployer = LocalDeployer(state_dir=tmp_path_factory.mktemp("hostile-local"))
    with deployer.deployed(registered_model_uri, {"workers": 1, "torch_threads": 1,
                                                  "startup_timeout_s": 180}) as endpoint:
        assert endpoint.url is not None
        parts = urlsplit(endpoint.url)
        assert parts.hostname == "127.0.0.1" and parts.port is not None
        yield parts.hostname, parts.port, endpoint.name


@pytest.fixture(scope="module")
def cases(tiny_recommender) -> list[hostile.Case]:
    out = hostile.corpus(tiny_recommender.vocab.raw_ids.tolist(), fuzz=200)
    assert len(out) >= 300
    return out


@pytest.fixture(scope="module")
def http_answers(deployment, cases) -> dict[str, Any]:
    host, port, name = deployment
    good = hostile.Case("good", json.dumps(hostile.good_body([1, 2, 3])).encode(), expect="2xx")
    for _ in range(20):  # warm: the first requests allocate what every later one reuses
        hostile.send(host, port, good)
    before = hostile.send(host, port, good)
    rss_before = _rss_mb(name)
    answers = {case.name: hostile.send(host, port, case) for case in cases}
    after = hostile.send(host, port, good)
    return {"answers": answers, "before": before, "after": after, "rss": (rss_before,
                                                                        _rss_mb(name))}


def test_the_corpus_through_the_local_deployer_gets_no_5xx_no_drop_and_named_4xx(
        http_answers, cases):
    found = [p for case in cases for p in hostile.problems(case, http_answers["answers"][case.name])]
    assert not found, f"{len(found)} problems:\n" + "\n".join(found[:40])


def test_the_good_answer_is_unchanged_after_the_corpus_and_rss_grew_under_25_percent(
        http_answers):
    before, after = http_answers["before"], http_answers["after"]
    assert before.status == after.status == 200
    assert json.loads(before.body) == json.loads(after.body)
    start, end = http_answers["rss"]
    statuses = Counter(a.status for a in http_answers["answers"].values())
    print(f"corpus: {len(http_answers['answers'])} requests, statuses {dict(statuses)},"
          f" deployment RSS {start:.0f} -> {end:.0f} MB")
    assert start > 0
    assert end < 1.25 * start, f"RSS {start:.0f} -> {end:.0f} MB"


@pytest.fixture(scope="module")
def handler(tiny_recommender, tmp_path_factory) -> Iterator[Any]:
    import niser.lambda_handler as module
    from niser.lambda_handler import Model
    from niser.onnx_export import write_model_files

    directory = tmp_path_factory.mktemp("hostile-lambda")
    write_model_files(tiny_recommender, directory)
    saved = module._MODEL
    module._MODEL = Model.load(directory)
    yield module.handler
    module._MODEL = saved


def _event(body: bytes) -> dict[str, Any]:
    try:
        return {"body": body.decode("utf-8"), "isBase64Encoded": False}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def _lambda_answer(handler: Any, event: Any) -> hostile.Answer:
    out = handler(event, None)
    body = out.get("body", json.dumps(out)) if isinstance(out, dict) else json.dumps(out)
    return hostile.Answer(int(out.get("statusCode", 200)), body.encode())


EVENT_CASES: list[tuple[str, Any]] = [
    ("bad base64", {"body": "!!!not base64!!!", "isBase64Encoded": True}),
    ("base64 of invalid UTF-8", {"body": base64.b64encode(b"\xff\xfe").decode(),
                                 "isBase64Encoded": True}),
    ("isBase64Encoded a string", {"body": "{}", "isBase64Encoded": "true"}),
    ("isBase64Encoded a number", {"body": "{}", "isBase64Encoded": 1}),
    ("body a number", {"body": 5}),
    ("body null", {"body": None}),
    ("body a list", {"body": [1, 2]}),
    ("event a list", [1, 2, 3]),
    ("event a string", "dataframe_records"),
    ("event null", None),
]


@pytest.mark.parametrize(("name", "event"), EVENT_CASES, ids=[n for n, _ in EVENT_CASES])
def test_a_malformed_lambda_event_gets_a_400_naming_what_is_wrong(handler, name, event):
    answer = _lambda_answer(handler, event)
    assert answer.status == 400, (name, answer)
    assert hostile.message_of(answer.body)


def test_the_corpus_through_the_lambda_handler_matches_the_http_status(handler, cases,
                                                                       http_answers):
    found = []
    for case in cases:
        if case.http_only:
            continue
        answer = _lambda_answer(handler, _event(case.body))
        found += hostile.problems(case, answer)
        http = http_answers["answers"][case.name]
        if http.status != answer.status:
            found.append(f"{case.name}: HTTP {http.status} but Lambda {answer.status} "
                         f"{answer.body[:100]!r}")
    assert not found, f"{len(found)} problems:\n" + "\n".join(found[:40])
