"""The Lambda deployer's control plane against a real moto server, and its local data plane.

moto does not implement ``PutProvisionedConcurrencyConfig`` (it answers 404), so the request the
deployer sends for provisioned concurrency is checked with botocore's ``Stubber`` instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from deployers import aws, standins
from deployers.aws_lambda import resources as res
from deployers.base import DeploymentFailed, SettingsError
from tests.deployers import lambda_support

deployer = lambda_support.deployer  # the shared fixture


@pytest.fixture(scope="module")
def model_dir(tiny_recommender, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model's Lambda function code (what a logged model carries as ``lambda``)."""
    from niser.lambda_bundle import write_bundle

    return str(write_bundle(tiny_recommender, tmp_path_factory.mktemp("function-code")))


def _leftovers() -> dict[str, list[str]]:
    """What exists in the (moto) account: functions, roles, buckets and their objects."""
    s3 = aws.client("s3")
    buckets = _names(s3.list_buckets()["Buckets"], "Name")
    return {"functions": _names(aws.client("lambda").list_functions()["Functions"],
                                "FunctionName"),
            "roles": _names(aws.client("iam").list_roles()["Roles"], "RoleName"),
            "buckets": buckets,
            "objects": [o["Key"] for b in buckets
                        for o in s3.list_objects_v2(Bucket=b).get("Contents", [])]}


def _names(listing: list[dict], key: str) -> list[str]:
    return [x[key] for x in listing]


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"memory_mb": 64}, "memory_mb=64"),
    ({"memory_mb": 20_000}, "memory_mb=20000"),
    ({"architecture": "sparc"}, "'x86_64' or 'arm64'"),
    ({"timeout_s": 901}, "timeout_s=901"),
    ({"mode": "image"}, "needs image_uri"),
    ({"reserved_concurrency": 1, "provisioned_concurrency": 2}, "exceeds reserved"),
    ({"memory": 512}, "unknown key 'memory'"),
])
def test_bad_settings_are_refused_before_any_aws_call(deployer, moto_server, aws_calls,
                                                      model_dir, settings, fragment):
    with pytest.raises(SettingsError) as err:
        deployer.deploy(model_dir, settings)
    assert fragment in str(err.value)
    assert aws_calls == []


def test_deploy_invoke_describe_teardown_against_moto(deployer, moto_server, model_dir,
                                                      tiny_recommender):
    settings = {"memory_mb": 512, "architecture": "x86_64", "timeout_s": 20,
                "reserved_concurrency": 3, "tags": {"team": "recsys"}, "alias": "live"}
    endpoint = deployer.deploy(model_dir, settings, "niser-fn-1")
    client = aws.client("lambda")
    cfg = client.get_function_configuration(FunctionName="niser-fn-1")
    assert cfg["MemorySize"] == 512 and cfg["Timeout"] == 20 and cfg["Runtime"] == "python3.11"
    assert cfg["Handler"] == "lambda_handler.handler" and cfg["Architectures"] == ["x86_64"]
    aliases = client.list_aliases(FunctionName="niser-fn-1")["Aliases"]
    assert _names(aliases, "Name") == ["live"] and aliases[0]["FunctionVersion"] == "1"
    assert client.get_function_concurrency(FunctionName="niser-fn-1")[
        "ReservedConcurrentExecutions"] == 3
    tags = client.get_function(FunctionName="niser-fn-1")["Tags"]
    assert tags["team"] == "recsys" and res.TAG_ROLE in tags
    assert deployer.list() == ["niser-fn-1"]
    desc = deployer.describe("niser-fn-1")
    assert (desc.cost.kind, desc.cost.memory_mb, desc.cost.architecture) == ("lambda", 512,
                                                                             "x86_64")
    assert desc.cost.max_concurrency == 3 and desc.cost.provisioned_concurrency == 0

    raw = tiny_recommender.vocab.raw_ids[:3].tolist()
    pred = endpoint.invoke([raw, [123]], 20)
    assert pred.items[0] == tiny_recommender.recommend([raw], 20)[0].items
    assert pred.raw["predictions"][1]["fallback"] is True
    assert pred.raw["lambda_report"]["init_ms"] > 0, "the first request is a cold start"
    assert "init_ms" not in endpoint.invoke([raw], 5).raw["lambda_report"]

    deployer.teardown("niser-fn-1")
    deployer.teardown("niser-fn-1")  # idempotent
    assert client.list_functions()["Functions"] == []
    assert aws.client("iam").list_roles()["Roles"] == []
    assert deployer.list() == []
    with pytest.raises(KeyError):
        deployer.describe("niser-fn-1")


def test_zip_over_50_mb_goes_through_s3_and_teardown_removes_it(deployer, moto_server,
                                                                 model_dir, monkeypatch):
    monkeypatch.setattr(res, "MAX_DIRECT_ZIP_BYTES", 1024)  # the tiny zip counts as large
    deployer.deploy(model_dir, {"memory_mb": 256}, "niser-fn-s3")
    s3 = aws.client("s3")
    tags = aws.client("lambda").get_function(FunctionName="niser-fn-s3")["Tags"]
    bucket = tags[res.TAG_BUCKET]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [tags[res.TAG_KEY]]
    deployer.teardown("niser-fn-s3")
    assert bucket not in _names(s3.list_buckets()["Buckets"], "Name")


def test_failure_midway_deletes_everything_created(deployer, moto_server, model_dir,
                                                   monkeypatch):
    real_client = aws.client

    def failing_client(service: str, **config):
        c = real_client(service, **config)
        if service == "lambda":
            def boom(**kwargs):
                raise RuntimeError("injected failure after create_function")
            c.publish_version = boom
        return c

    monkeypatch.setattr(res, "MAX_DIRECT_ZIP_BYTES", 1024)
    monkeypatch.setattr(aws, "client", failing_client)
    with pytest.raises(DeploymentFailed, match="injected failure"):
        deployer.deploy(model_dir, {"memory_mb": 256}, "niser-fn-fail")
    assert real_client("lambda").list_functions()["Functions"] == []
    assert real_client("iam").list_roles()["Roles"] == []
    assert real_client("s3").list_buckets()["Buckets"] == []
    assert not (Path(os.environ["NISER_LAMBDA_STATE_DIR"]) / "niser-fn-fail").exists()


@pytest.mark.parametrize("operation", ["iam.CreateRole", "iam.PutRolePolicy", "s3.PutObject",
                                       "lambda.CreateFunction", "lambda.PublishVersion",
                                       "lambda.CreateAlias", "lambda.PutFunctionConcurrency"])
def test_ctrl_c_midway_leaves_no_role_object_or_function(deployer, moto_server, model_dir,
                                                         monkeypatch, operation):
    """Ctrl-C right after an AWS call succeeded: the deploy cleans up and re-raises it."""
    monkeypatch.setattr(res, "MAX_DIRECT_ZIP_BYTES", 1024)  # the code goes through S3 too
    seen = []

    def interrupt(**kwargs):
        seen.append(operation)
        raise KeyboardInterrupt

    events = aws.session().events
    events.register(f"after-call.{operation}", interrupt, unique_id="test-ctrl-c")
    try:
        with pytest.raises(KeyboardInterrupt):
            deployer.deploy(model_dir, {"memory_mb": 256, "reserved_concurrency": 2},
                            "niser-fn-int")
    finally:
        events.unregister(f"after-call.{operation}", unique_id="test-ctrl-c")
    assert seen == [operation]
    assert _leftovers() == {"functions": [], "roles": [], "buckets": [], "objects": []}
    assert deployer.list() == []
    assert not (Path(os.environ["NISER_LAMBDA_STATE_DIR"]) / "niser-fn-int").exists()


def test_provisioned_concurrency_request_checked_with_stubber():
    """moto lacks PutProvisionedConcurrencyConfig: the request is checked with Stubber."""
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response(
            "put_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 4, "Status": "IN_PROGRESS"},
            {"FunctionName": "fn", "Qualifier": "live", "ProvisionedConcurrentExecutions": 4})
        assert res.put_provisioned_concurrency(client, "fn", "live", 4, False) is True
        stub.assert_no_pending_responses()
    with Stubber(client) as stub:
        stub.add_client_error("put_provisioned_concurrency_config", "ResourceNotFoundException",
                              http_status_code=404)
        with pytest.raises(Exception, match="ResourceNotFoundException"):
            res.put_provisioned_concurrency(client, "fn", "live", 4, True)


def test_provisioned_concurrency_prestarts_local_environments(deployer, moto_server, model_dir):
    endpoint = deployer.deploy(model_dir, {"memory_mb": 256, "provisioned_concurrency": 1,
                                           "reserved_concurrency": 2}, "niser-fn-pc")
    assert standins.current().aws_lambda().environments("niser-fn-pc") == 1
    assert deployer.describe("niser-fn-pc").cost.provisioned_concurrency == 1
    assert "init_ms" not in endpoint.invoke([[1]], 3).raw["lambda_report"]
    deployer.teardown("niser-fn-pc")


@pytest.mark.slow
def test_mlflow_deployments_cli_creates_and_deletes_against_moto(moto_server, model_dir,
                                                                 tmp_path):
    env = {**os.environ, "NISER_LAMBDA_STATE_DIR": str(tmp_path / "state")}
    mlflow = [sys.executable, "-m", "mlflow", "deployments"]
    created = subprocess.run([*mlflow, "create", "-t", "niser-lambda", "--name", "niser-cli",
                              "-m", model_dir, "-C", "memory_mb=1024", "-C", "architecture=arm64"],
                             env=env, capture_output=True, text=True, timeout=300, check=False)
    assert created.returncode == 0, created.stderr[-3000:]
    cfg = aws.client("lambda").get_function_configuration(FunctionName="niser-cli")
    assert cfg["MemorySize"] == 1024 and cfg["Architectures"] == ["arm64"]
    got = subprocess.run([*mlflow, "get", "-t", "niser-lambda", "--name", "niser-cli"],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert got.returncode == 0 and "1024" in got.stdout, got.stderr[-2000:]
    deleted = subprocess.run([*mlflow, "delete", "-t", "niser-lambda", "--name", "niser-cli"],
                             env=env, capture_output=True, text=True, timeout=300, check=False)
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    assert aws.client("lambda").list_functions()["Functions"] == []
    bad = subprocess.run([*mlflow, "create", "-t", "niser-lambda", "--name", "x", "-m", model_dir,
                          "-C", "memory_mb=99"], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert bad.returncode != 0 and "memory_mb" in bad.stderr
    assert json.dumps(aws.client("lambda").list_functions()["Functions"]) == "[]"


def test_a_role_that_already_exists_is_neither_used_nor_deleted_by_a_failed_deploy(
        deployer, moto_server, model_dir):
    import json

    iam = aws.client("iam")
    role = res.role_name("niser-fn-taken")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": []}), Description="someone else's")
    with pytest.raises(DeploymentFailed, match=f"IAM role {role} already exists"):
        deployer.deploy(model_dir, {"memory_mb": 256}, "niser-fn-taken")
    assert iam.get_role(RoleName=role)["Role"]["Description"] == "someone else's"
    assert aws.client("lambda").list_functions()["Functions"] == []
