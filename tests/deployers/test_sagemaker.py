"""The SageMaker deployer against a real moto server process, and its local data plane.

State is asserted with describe/list calls on the moto server. moto has no ``UpdateEndpoint``:
the update tests answer that one call from a botocore ``before-call`` hook (after botocore has
validated the request against the service model), either with AWS's effect, the endpoint moved
to the new config, or with an AWS error. The deployer's own code runs unchanged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from deployers import aws, procs, standins
from deployers.base import DeployerError, DeploymentFailed, SettingsError
from deployers.registry import get_deployer
from deployers.sagemaker import SageMakerDeployer

CONTRACT_MODEL = Path(__file__).with_name("contract_model.py")
SESSIONS = [[1, 2, 3], [5], [42, 7, 7, 19], [100]]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two versions of a small pyfunc model that answers the serving contract."""
    base = tmp_path_factory.mktemp("models")
    example = (pd.DataFrame({"session": [[1, 2, 3]]}), {"k": 20})
    out = []
    for salt in (0, 1):
        path = base / f"v{salt + 1}"
        mlflow.pyfunc.save_model(str(path), python_model=str(CONTRACT_MODEL),
                                 input_example=example, model_config={"salt": salt})
        out.append(str(path))
    return out[0], out[1]


@pytest.fixture
def account(moto_server: str) -> str:
    """An empty moto account holding MLflow's serving-image repository; returns its image URL."""
    repo = aws.client("ecr").create_repository(repositoryName="mlflow-pyfunc")["repository"]
    return f"{repo['repositoryUri']}:{mlflow.__version__}"


def leftovers() -> dict[str, list[Any]]:
    """Every resource of the kinds a deployment creates, by kind (empty lists: nothing left)."""
    sm, s3, iam = aws.client("sagemaker"), aws.client("s3"), aws.client("iam")
    aas = aws.client("application-autoscaling")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return {
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
        "buckets": buckets,
        "objects": [o["Key"] for b in buckets
                    for o in s3.list_objects_v2(Bucket=b).get("Contents", [])],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"]],
        "scalable_targets": aas.describe_scalable_targets(
            ServiceNamespace="sagemaker")["ScalableTargets"],
        "scaling_policies": aas.describe_scaling_policies(
            ServiceNamespace="sagemaker")["ScalingPolicies"],
    }


KINDS = ("endpoints", "configs", "models", "buckets", "objects", "roles", "scalable_targets",
         "scaling_policies")
NOTHING: dict[str, list[Any]] = {k: [] for k in KINDS}


def test_registered_under_its_entry_point() -> None:
    assert isinstance(get_deployer("sagemaker"), SageMakerDeployer)


@pytest.mark.parametrize(("raw", "field", "hint"), [
    ({"instance_type": "ml.t2.medium"}, "instance_type", "ml.g4dn.xlarge"),
    ({"instance_count": 0}, "instance_count", "greater than or equal to 1"),
    ({"instance_typo": "ml.c5.large"}, "instance_typo", "valid keys: autoscaling"),
    ({"serverless": {"memory_mb": 7168}}, "serverless.memory_mb", "1024, 2048"),
    ({"serverless": {"max_concurrency": 201}}, "serverless.max_concurrency", "200"),
    ({"serverless": {}, "instance_count": 2}, "serverless cannot be combined", "instance_count"),
    ({"autoscaling": {"min_capacity": 3, "max_capacity": 2,
                      "target_invocations_per_instance": 100}}, "autoscaling", "min_capacity"),
    ({"image_url": "docker.io/mlflow-pyfunc:latest"}, "image_url", "build-and-push-container"),
    ({"tags": {"aws:owner": "me"}}, "tags", "aws:"),
])
def test_bad_settings_refused_before_any_aws_call(
    moto_server: str, aws_calls: list[tuple[str, str]], model_dirs: tuple[str, str],
    raw: dict[str, Any], field: str, hint: str,
) -> None:
    with pytest.raises(SettingsError) as err:
        SageMakerDeployer().deploy(model_dirs[0], raw)
    assert field in str(err.value) and hint in str(err.value)
    assert aws_calls == []
    assert leftovers() == NOTHING


def test_create_instance_endpoint(account: str, model_dirs: tuple[str, str]) -> None:
    dep = SageMakerDeployer()
    ep = dep.deploy(model_dirs[0], {"instance_type": "ml.c5.xlarge", "instance_count": 2,
                                    "tags": {"project": "niser"}, "local": False}, name="ep-inst")
    sm = aws.client("sagemaker")
    desc = sm.describe_endpoint(EndpointName="ep-inst")
    assert desc["EndpointStatus"] == "InService"
    variant = sm.describe_endpoint_config(
        EndpointConfigName=desc["EndpointConfigName"])["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 2)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == account
    assert model["PrimaryContainer"]["Environment"]["MLFLOW_DEPLOYMENT_FLAVOR_NAME"] == (
        "python_function")
    bucket, _, key = model["PrimaryContainer"]["ModelDataUrl"][5:].partition("/")
    assert key.startswith("niser-mlops/ep-inst/") and key.endswith("/model.tar.gz")
    assert aws.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=desc["EndpointArn"])["Tags"]}
    assert (tags["project"], tags["niser-mlops:model-uri"]) == ("niser", model_dirs[0])
    d = dep.describe("ep-inst")
    assert (d.status, d.cost.kind, d.cost.instance_type, d.cost.instance_count) == (
        "InService", "instance", "ml.c5.xlarge", 2)
    assert dep.list() == ["ep-inst"] and ep.url is None


def test_generated_role_policy_names_its_resources(
        account: str, model_dirs: tuple[str, str]) -> None:
    SageMakerDeployer().deploy(model_dirs[0], {"local": False}, name="ep-role")
    iam = aws.client("iam")
    model = aws.client("sagemaker").describe_model(
        ModelName=aws.client("sagemaker").list_models()["Models"][0]["ModelName"])
    role_name = model["ExecutionRoleArn"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    doc = iam.get_role_policy(RoleName=role_name, PolicyName="execution")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    by_sid = {s["Sid"]: s["Resource"] for s in doc["Statement"]}
    bucket = model["PrimaryContainer"]["ModelDataUrl"][5:].split("/")[0]
    assert by_sid["ReadModelArchives"] == [f"arn:aws:s3:::{bucket}/niser-mlops/ep-role/*"]
    assert by_sid["PullServingImage"] == [
        "arn:aws:ecr:us-east-1:123456789012:repository/mlflow-pyfunc"]
    assert by_sid["WriteEndpointLogs"][0].endswith(":log-group:/aws/sagemaker/Endpoints/ep-role")
    assert [s for s in doc["Statement"] if s["Resource"] == ["*"]] == [{
        "Sid": "EcrLoginHasNoResourceLevelPermission", "Effect": "Allow",
        "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]}]


def test_create_serverless_endpoint(account: str, model_dirs: tuple[str, str]) -> None:
    dep = SageMakerDeployer()
    dep.deploy(model_dirs[0], {"serverless": {"memory_mb": 3072, "max_concurrency": 10},
                               "local": False}, name="ep-serverless")
    sm = aws.client("sagemaker")
    config = sm.describe_endpoint(EndpointName="ep-serverless")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10}
    assert "InstanceType" not in variant
    cost = dep.describe("ep-serverless").cost
    assert (cost.kind, cost.memory_mb, cost.max_concurrency, cost.instance_type) == (
        "serverless", 3072, 10, None)


def test_autoscaling_registered_and_torn_down(account: str, model_dirs: tuple[str, str]) -> None:
    dep = SageMakerDeployer()
    dep.deploy(model_dirs[0], {"instance_count": 2, "local": False, "autoscaling": {
        "min_capacity": 1, "max_capacity": 4, "target_invocations_per_instance": 750}},
        name="ep-scale")
    aas = aws.client("application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"])
            for t in targets] == [("endpoint/ep-scale/variant/AllTraffic",
                                   "sagemaker:variant:DesiredInstanceCount", 1, 4)]
    policy, = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 750
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance")
    details = dep.describe("ep-scale").details
    assert (details["autoscaling_min"], details["autoscaling_max"]) == (1, 4)
    bucket = leftovers()["buckets"]
    dep.teardown("ep-scale")
    assert leftovers() == {**NOTHING, "buckets": bucket}  # the shared bucket stays
    dep.teardown("ep-scale")  # idempotent
    with pytest.raises(KeyError):
        dep.describe("ep-scale")


@pytest.mark.parametrize("after", [
    "sagemaker.CreateModel", "sagemaker.CreateEndpointConfig", "sagemaker.CreateEndpoint",
    "application-autoscaling.PutScalingPolicy",
])
def test_failure_midway_leaves_nothing(account: str, model_dirs: tuple[str, str],
                                       after: str) -> None:
    def fail(**_: Any) -> None:
        raise RuntimeError(f"injected failure after {after}")

    events = aws.session().events
    events.register(f"after-call.{after}", fail, unique_id="inject")
    try:
        with pytest.raises(DeploymentFailed, match=f"injected failure after {after}") as err:
            SageMakerDeployer().deploy(model_dirs[0], {"local": False, "autoscaling": {
                "target_invocations_per_instance": 10}}, name="ep-fail")
    finally:
        events.unregister(f"after-call.{after}", unique_id="inject")
    assert "everything it created was deleted" in str(err.value)
    assert leftovers() == NOTHING


def test_missing_serving_image_refused_with_fix(moto_server: str,
                                                model_dirs: tuple[str, str]) -> None:
    with pytest.raises(DeploymentFailed, match="build-and-push-container") as err:
        SageMakerDeployer().deploy(model_dirs[0], {"local": False}, name="ep-noimage")
    assert isinstance(err.value.__cause__, DeployerError)
    assert leftovers() == NOTHING


def test_mlflow_sagemaker_target_sees_the_deployment(account: str,
                                                     model_dirs: tuple[str, str]) -> None:
    SageMakerDeployer().deploy(model_dirs[0], {"local": False}, name="ep-mlflow")
    client = mlflow.deployments.get_deploy_client("sagemaker:/us-east-1")
    assert [d["EndpointName"] for d in client.list_deployments()] == ["ep-mlflow"]
    assert client.get_deployment("ep-mlflow")["EndpointStatus"] == "InService"


@contextlib.contextmanager
def _update_endpoint_answered(seen: list[dict[str, Any]], error: str | None = None
                              ) -> Iterator[None]:
    """Answer ``UpdateEndpoint`` (absent from moto) as AWS would: move the endpoint to the new
    config, or fail with ``error``. ``seen`` gets every validated request."""
    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = json.loads(params["body"])  # the request as serialised for AWS
        seen.append(params)
        if error is not None:
            raise ClientError({"Error": {"Code": error, "Message": "injected"}}, "UpdateEndpoint")
        sm = aws.client("sagemaker")
        arn = sm.describe_endpoint(EndpointName=params["EndpointName"])["EndpointArn"]
        tags = sm.list_tags(ResourceArn=arn)["Tags"]
        sm.delete_endpoint(EndpointName=params["EndpointName"])
        sm.create_endpoint(EndpointName=params["EndpointName"],
                           EndpointConfigName=params["EndpointConfigName"], Tags=tags)
        return AWSResponse("", 200, {}, None), {"EndpointArn": arn}

    events = aws.session().events
    events.register("before-call.sagemaker.UpdateEndpoint", answer, unique_id="update-endpoint")
    try:
        yield
    finally:
        events.unregister("before-call.sagemaker.UpdateEndpoint", unique_id="update-endpoint")


@pytest.mark.slow
def test_blue_green_update_to_new_version(account: str, model_dirs: tuple[str, str]) -> None:
    """Control plane in moto (UpdateEndpoint via Stubber, see the module docstring) and the
    local data plane: after the update, invocations answer with the new version."""
    v1, v2 = model_dirs
    dep = SageMakerDeployer()
    seen: list[dict[str, Any]] = []
    sm = aws.client("sagemaker")
    ep = dep.deploy(v1, {"instance_type": "ml.c5.large", "local": True}, name="ep-bg")
    try:
        old_config = sm.describe_endpoint(EndpointName="ep-bg")["EndpointConfigName"]
        old_model = leftovers()["models"]
        assert ep.invoke(SESSIONS).items == _in_process(v1, SESSIONS, 20)
        with _update_endpoint_answered(seen):
            new = dep.update("ep-bg", v2)
        request, = seen
        assert request["DeploymentConfig"]["BlueGreenUpdatePolicy"][
            "TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
        assert request["EndpointConfigName"] != old_config
        state = leftovers()
        assert state["endpoints"] == ["ep-bg"]
        assert state["configs"] == [request["EndpointConfigName"]]
        assert len(state["models"]) == 1 and state["models"] != old_model
        assert len(state["objects"]) == 1 and state["models"][0] in state["objects"][0]
        assert dep.describe("ep-bg").details["model_uri"] == v2
        assert new.invoke(SESSIONS).items == _in_process(v2, SESSIONS, 20)
        assert _in_process(v1, SESSIONS, 20) != _in_process(v2, SESSIONS, 20)
    finally:
        dep.teardown("ep-bg")
    assert {k: v for k, v in leftovers().items() if k != "buckets"} == {
        k: v for k, v in NOTHING.items() if k != "buckets"}


def test_failed_update_keeps_old_version(account: str, model_dirs: tuple[str, str]) -> None:
    """UpdateEndpoint refused by AWS: the new model and config are deleted, the old one serves."""
    dep = SageMakerDeployer()
    dep.deploy(model_dirs[0], {"local": False}, name="ep-keep")
    before = leftovers()
    seen: list[dict[str, Any]] = []
    with _update_endpoint_answered(seen, error="ResourceLimitExceeded"), pytest.raises(
            DeploymentFailed, match="still serves config"):
        dep.update("ep-keep", model_dirs[1])
    assert len(seen) == 1 and seen[0]["EndpointConfigName"] not in before["configs"]
    assert leftovers() == before
    assert dep.describe("ep-keep").status == "InService"


def _in_process(model: str, sessions: list[list[int]], k: int) -> list[list[int]]:
    rows = mlflow.pyfunc.load_model(model).predict(
        pd.DataFrame({"session": sessions}), params={"k": k})
    return [list(map(int, items)) for items in pd.DataFrame(rows)["items"]]


@pytest.mark.slow
def test_invoke_endpoint_through_local_data_plane(account: str,
                                                  model_dirs: tuple[str, str]) -> None:
    dep = SageMakerDeployer()
    with dep.deployed(model_dirs[0], {"serverless": {"memory_mb": 2048}}, name="ep-dp") as ep:
        assert ep.url is not None and ep.url.endswith("/endpoints/ep-dp/invocations")
        serving = standins.current().sagemaker()
        server = serving.server("ep-dp")
        answer = ep.invoke(SESSIONS, k=5)
        assert answer.items == _in_process(model_dirs[0], SESSIONS, 5)
        assert all(len(row) == 5 for row in answer.scores)
        # a plain boto3 client pointed at the data plane does the same real inference
        runtime = aws.session().client("sagemaker-runtime",
                                       endpoint_url=ep.url.split("/endpoints/")[0])
        raw = runtime.invoke_endpoint(EndpointName="ep-dp", ContentType="application/json",
                                      Body=json.dumps({"dataframe_records": [{"session": [1]}]}))
        assert raw["InvokedProductionVariant"] == "AllTraffic"
        body = json.loads(raw["Body"].read())
        assert body["predictions"][0]["items"] == _in_process(model_dirs[0], [[1]], 20)[0]
        with pytest.raises(Exception, match="ValidationError"):
            runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}",
                                    ContentType="application/json")
        nginx = serving.dataplane.record
        assert nginx is not None and procs.alive(nginx) and procs.alive(server.record)
    assert not procs.alive(server.record) and not procs.alive(nginx)
    assert "ep-dp" not in serving.endpoints()


@pytest.mark.slow
def test_registered_niser_model_top20_matches_in_process(
        request: pytest.FixtureRequest, account: str) -> None:
    """The acceptance check: boto3 invoke_endpoint through the local data plane returns the same
    top-20 raw item ids as the registered pyfunc loaded in-process, on held-out sessions."""
    try:
        uri = request.getfixturevalue("registered_model_uri")
        data, _ = request.getfixturevalue("tiny_training")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py provides no registered_model_uri/tiny_training fixture")
    sessions = [[int(x) for x in data.vocab.decode(s)] for s in data.test.sessions()[:50]]
    with SageMakerDeployer().deployed(uri, {"local": True}) as ep:
        answer = ep.invoke(sessions, k=20)
    expected = _in_process(uri, sessions, 20)
    assert answer.items == expected
    assert all(len(items) == 20 for items in expected)


def test_invoker_of_absent_endpoint_raises_key_error(moto_server: str) -> None:
    with pytest.raises(KeyError, match="no-such"):
        SageMakerDeployer().invoker("no-such")


def test_a_role_that_already_exists_is_neither_used_nor_deleted_by_a_failed_deploy(
        account: str, model_dirs: tuple[str, str]) -> None:
    from deployers.sagemaker import role as sm_role

    iam = aws.client("iam")
    role = sm_role.role_name("ep-taken")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": []}), Description="someone else's")
    with pytest.raises(DeploymentFailed, match=f"IAM role {role} already exists"):
        SageMakerDeployer().deploy(model_dirs[0], {"local": False}, name="ep-taken")
    assert iam.get_role(RoleName=role)["Role"]["Description"] == "someone else's"
    assert aws.client("sagemaker").list_endpoints()["Endpoints"] == []


def test_worker_env_sizes_workers_and_threads_to_the_instance_vcpus() -> None:
    from deployers.sagemaker.resources import worker_env

    assert worker_env("ml.c5.large", None) == {
        "MLFLOW_MODELS_WORKERS": "2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert worker_env("ml.c5.xlarge", 2)["OMP_NUM_THREADS"] == "2"
    assert worker_env("ml.c5.large", 1)["OMP_NUM_THREADS"] == "2"
    assert worker_env("ml.c5.large", 4)["OMP_NUM_THREADS"] == "1"  # never below one
    assert worker_env(None, None) == {} and worker_env(None, 3) == {"MLFLOW_MODELS_WORKERS": "3"}


def test_container_environment_carries_workers_threads_and_batching(
        account: str, model_dirs: tuple[str, str]) -> None:
    SageMakerDeployer().deploy(model_dirs[0], {"local": False, "instance_type": "ml.c5.large",
                                               "environment": {"NISER_BATCHING": "0",
                                                               "NISER_MAX_BATCH_SESSIONS": "16"}},
                               name="ep-env")
    sm = aws.client("sagemaker")
    (model,) = sm.list_models()["Models"]
    env = sm.describe_model(ModelName=model["ModelName"])["PrimaryContainer"]["Environment"]
    assert (env["MLFLOW_MODELS_WORKERS"], env["OMP_NUM_THREADS"]) == ("2", "1")
    assert (env["NISER_BATCHING"], env["NISER_MAX_BATCH_SESSIONS"]) == ("0", "16")
