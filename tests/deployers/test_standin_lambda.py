"""The local Lambda runtime: real awslambdaric processes behind the Runtime and Invoke APIs,
exercised with boto3 ``lambda.invoke`` exactly as against AWS."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from deployers.aws_lambda.invoker import parse_report
from deployers.standins import FunctionConfig, LocalLambda
from tests.deployers.lambda_support import build_or_skip, toy_package

TOY = """
    import os, time
    def handler(event, context):
        time.sleep(event.get("sleep", 0))
        if event.get("exit"):
            os._exit(3)
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"pid": os.getpid(), "echo": event,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "memory": context.memory_limit_in_mb}
"""


@pytest.fixture
def service():
    with LocalLambda() as svc:
        yield svc


def client(svc: LocalLambda):
    return boto3.client("lambda", endpoint_url=svc.url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=30))


def invoke(svc: LocalLambda, name: str, event: dict, **kwargs):
    out = client(svc).invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail",
                             **kwargs)
    log = base64.b64decode(out["LogResult"]).decode()
    return out, json.loads(out["Payload"].read() or b"null"), log


def test_cold_start_then_warm_in_the_same_environment(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY), memory_mb=256))
    first, body1, log1 = invoke(service, "toy", {"a": 1})
    _, body2, log2 = invoke(service, "toy", {"a": 2})
    assert first["StatusCode"] == 200 and "FunctionError" not in first
    assert body1["echo"] == {"a": 1} and body2["echo"] == {"a": 2}
    assert body1["pid"] == body2["pid"], "a warm request reuses the idle environment"
    assert body1["memory"] == "256" and 0 < body1["remaining_ms"] <= 3000
    cold, warm = parse_report(log1), parse_report(log2)
    assert cold["init_ms"] > 0 and "init_ms" not in warm
    assert cold["billed_ms"] >= cold["init_ms"] + cold["duration_ms"] - 1
    assert "START RequestId" in log1 and "END RequestId" in log1 and "Max Memory Used" in log1
    assert first["ExecutedVersion"] == "$LATEST"
    print(f"\ntoy handler cold start: init {cold['init_ms']:.0f} ms")


def test_one_request_per_environment_and_429_beyond_the_limit(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY),
                                        reserved_concurrency=2, timeout_s=10))
    results: list = []

    def slow() -> None:
        results.append(invoke(service, "toy", {"sleep": 1.5})[1])

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while service.environments("toy") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # both environments are busy with their one request
    with pytest.raises(ClientError) as err:
        client(service).invoke(FunctionName="toy", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    for t in threads:
        t.join()
    assert len({r["pid"] for r in results}) == 2, "two concurrent requests, two environments"
    assert service.environments("toy") == 2
    _, again, _ = invoke(service, "toy", {})
    assert again["pid"] in {r["pid"] for r in results}, "an idle environment is reused"


def test_timeout_kills_the_environment_and_reports_it(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY), timeout_s=1))
    _, warm, _ = invoke(service, "toy", {})
    started = time.monotonic()
    out, body, log = invoke(service, "toy", {"sleep": 30})
    assert time.monotonic() - started < 5
    assert out["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert "Status: timeout" in log
    assert service.environments("toy") == 0
    with pytest.raises(ProcessLookupError):
        os.kill(warm["pid"], 0)
    _, fresh, fresh_log = invoke(service, "toy", {})
    assert fresh["pid"] != warm["pid"] and parse_report(fresh_log)["init_ms"] > 0


def test_handler_error_and_runtime_exit_are_reported(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY)))
    out, body, _ = invoke(service, "toy", {"fail": True})
    assert out["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "asked to fail"
    assert service.environments("toy") == 1, "a handler error keeps the environment"
    out, body, log = invoke(service, "toy", {"exit": True})
    assert out["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError"
    assert "Status: exit" in log and service.environments("toy") == 0


def test_init_error_is_reported_and_the_environment_discarded(service, tmp_path):
    package = toy_package(tmp_path, "raise RuntimeError('model file missing')\n")
    service.add_function(FunctionConfig("broken", package))
    out, body, log = invoke(service, "broken", {})
    assert out["FunctionError"] == "Unhandled"
    assert "model file missing" in body["errorMessage"]
    assert body["errorType"] == "RuntimeError"  # the runtime client names the exception
    assert "Status: init_error" in log
    assert service.environments("broken") == 0


def test_provisioned_environments_are_warm_before_the_first_request(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY),
                                        provisioned_concurrency=2, reserved_concurrency=2))
    assert service.environments("toy") == 2
    out, _, log = invoke(service, "toy", {}, Qualifier="live")
    assert "init_ms" not in parse_report(log)
    assert out["ExecutedVersion"] == "live"


def test_unknown_function_is_resource_not_found(service):
    with pytest.raises(ClientError) as err:
        client(service).invoke(FunctionName="nope", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_real_package_answers_boto3_invoke_like_the_recommender(service, tiny_recommender,
                                                                 tmp_path: Path):
    package = build_or_skip(tiny_recommender, tmp_path / "build")
    service.add_function(FunctionConfig("niser", package.root, memory_mb=1769, timeout_s=30,
                                        aliases={"live": "1"}))
    raw = tiny_recommender.vocab.raw_ids[:4].tolist()
    body = {"dataframe_records": [{"session": raw}, {"session": [1]}], "params": {"k": 10}}
    arn = "arn:aws:lambda:us-east-1:123456789012:function:niser:live"
    out, got, log = invoke(service, arn, body)
    assert out["ExecutedVersion"] == "1" and "FunctionError" not in out
    want = tiny_recommender.recommend([raw, [1]], 10)
    assert [p["items"] for p in got["predictions"]] == [w.items for w in want]
    assert got["predictions"][1]["fallback"] is True
    cold = parse_report(log)
    print(f"\nONNX package cold start: init {cold['init_ms']:.0f} ms")
    _, bad, _ = invoke(service, "niser", {"dataframe_records": [{"session": [-1]}]})
    assert bad["statusCode"] == 400 and "row 0, field 'session'" in bad["message"]
