"""How each AWS resource of a SageMaker deployment is made and unmade, one function each.

Every call goes through ``deployers.aws.client``. Pieces of MLflow's built-in ``sagemaker``
target are reused so the result is what that target would build: the archive layout
(``_make_tarfile``), the container environment the mlflow-pyfunc image reads
(``_get_deployment_config``), the flavor check, the default image/bucket names and the
``app_name`` tag. Delete functions treat "already gone" as success.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import mlflow.sagemaker as mlflow_sm
from botocore.exceptions import ClientError
from mlflow.models import Model

from deployers import aws, roles
from deployers.aws import absent
from deployers.base import DeployerError, Undo
from deployers.ownership import TAG_DEPLOYMENT as TAG_DEPLOYMENT  # re-exported: one home
from deployers.sagemaker.instances import instance_shape
from deployers.sagemaker.settings import SageMakerSettings

TAG_MODEL_URI = "niser-mlops:model-uri"
TAG_ROLE = "niser-mlops:created-role"
TAG_BUCKET = "niser-mlops:bucket"
PREFIX = "niser-mlops"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass(frozen=True)
class Account:
    account: str
    partition: str
    region: str


def identity() -> Account:
    """Account, partition and region of the caller."""
    arn = aws.client("sts").get_caller_identity()["Arn"]
    parts = arn.split(":")
    return Account(parts[4], parts[1], aws.region())


def default_image(acct: Account) -> str:
    """MLflow's name for the image ``mlflow sagemaker build-and-push-container`` pushes."""
    return (f"{acct.account}.dkr.ecr.{acct.region}.amazonaws.com/"
            f"{mlflow_sm.DEFAULT_IMAGE_NAME}:{mlflow.__version__}")


def default_bucket(acct: Account) -> str:
    """MLflow's default bucket name, so both share one bucket per account and region."""
    return f"{mlflow_sm.DEFAULT_BUCKET_NAME_PREFIX}-{acct.region}-{acct.account}"


def check_image(image: str) -> None:
    """Raise ``DeployerError`` with how to fix it when the image's ECR repository is missing."""
    repo = image.split("/", 1)[1].split(":")[0]
    try:
        aws.client("ecr").describe_repositories(repositoryNames=[repo])
    except ClientError as exc:
        if aws.error_code(exc) != "RepositoryNotFoundException":
            raise
        raise DeployerError(
            f"serving image repository {repo!r} not found in ECR (image_url={image!r}); build and "
            "push it with `mlflow sagemaker build-and-push-container` (needs Docker), or set "
            "image_url to an existing mlflow-pyfunc image") from None


def ensure_bucket(bucket: str, region: str, undo: Undo) -> None:
    """Create ``bucket`` when absent, registering its deletion with ``undo``."""
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if aws.error_code(exc) not in {"404", "NoSuchBucket"}:
            raise
    extra = {} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}
    undo.push(f"bucket {bucket}", lambda: s3.delete_bucket(Bucket=bucket))
    s3.create_bucket(Bucket=bucket, **extra)


def tag_list(tags: Mapping[str, str], name: str) -> list[dict[str, str]]:
    """AWS tag list with MLflow's ``app_name`` tag; values reduced to the allowed characters."""
    def clean(v: str) -> str:
        return "".join(c if c.isalnum() or c in " _.:/=+-@" else "_" for c in v)[:256]
    all_tags = {**tags, mlflow_sm.SAGEMAKER_APP_NAME_TAG_KEY: name}
    return [{"Key": k, "Value": clean(v)} for k, v in all_tags.items()]


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(instance_type: str | None, workers: int | None) -> dict[str, str]:
    """The container environment that sizes the scoring server to an instance: its workers
    (``MLFLOW_MODELS_WORKERS``; default one per vCPU, as MLflow's container runs) and torch
    threads per worker (vCPUs / workers, at least 1), so workers x threads <= vCPUs. A serverless
    variant (``instance_type`` None) gets only the workers it was given."""
    if instance_type is None:
        return {"MLFLOW_MODELS_WORKERS": str(workers)} if workers else {}
    vcpus = instance_shape(instance_type).vcpus
    n = workers or vcpus
    threads = str(max(1, vcpus // n))
    return {"MLFLOW_MODELS_WORKERS": str(n), **{var: threads for var in THREAD_VARS}}


def create_model(model_uri: str, name: str, image: str, role: str, bucket: str,
                 tags: Mapping[str, str], undo: Undo, role_is_new: bool = False,
                 model_env: Mapping[str, str] | None = None) -> str:
    """Upload ``model.tar.gz`` and create the SageMaker model; returns the model's name.
    ``model_env`` joins the container's environment: the scoring server's size (``worker_env``)
    and the deployment's ``environment`` setting, or an update's carried-over environment."""
    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    model_name = f"{name[:50]}-m-{uuid.uuid4().hex[:8]}"
    key = f"{PREFIX}/{name}/{model_name}/model.tar.gz"
    with tempfile.TemporaryDirectory(prefix="niser-sm-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        flavor = mlflow_sm._get_preferred_deployment_flavor(
            Model.load(os.path.join(local, "MLmodel")))
        archive = os.path.join(tmp, "model.tar.gz")
        mlflow_sm._make_tarfile(archive, local)
        undo.push(f"s3://{bucket}/{key}", lambda: s3.delete_object(Bucket=bucket, Key=key))
        s3.upload_file(archive, bucket, key)
    env = mlflow_sm._get_deployment_config(flavor)
    env.update(model_env or {})
    request = {
        "ModelName": model_name, "ExecutionRoleArn": role,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": f"s3://{bucket}/{key}",
                             "Environment": env},
        "Tags": tag_list({**tags, TAG_MODEL_URI: model_uri}, name),
    }
    # Registered before the call: the model may exist even when the call raises (e.g. a timeout).
    undo.push(f"model {model_name}", lambda: delete_model(model_name))
    started, attempt = time.monotonic(), 0
    while True:
        try:
            sm.create_model(**request)
            break
        except ClientError as exc:  # a fresh role needs a few seconds before SageMaker sees it
            if not (role_is_new and roles.is_propagation_error(exc)
                    and roles.wait_before_retry(started, attempt)):
                raise
            attempt += 1
    return model_name


def delete_model(model_name: str) -> None:
    """Delete a SageMaker model and its archive in S3; absent is not an error."""
    sm = aws.client("sagemaker")
    try:
        url = sm.describe_model(ModelName=model_name)["PrimaryContainer"]["ModelDataUrl"]
    except ClientError as exc:
        if absent(exc):
            return
        raise
    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        aws.client("s3").delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if not absent(exc):
            raise
    sm.delete_model(ModelName=model_name)


def variant(s: SageMakerSettings, model_name: str) -> dict[str, Any]:
    """The production variant of ``s`` serving ``model_name``."""
    out: dict[str, Any] = {"VariantName": s.variant_name, "ModelName": model_name,
                           "InitialVariantWeight": 1.0}
    if s.serverless is not None:
        out["ServerlessConfig"] = {"MemorySizeInMB": s.serverless.memory_mb,
                                   "MaxConcurrency": s.serverless.max_concurrency}
    else:
        out["InstanceType"] = s.instance_type
        out["InitialInstanceCount"] = s.instance_count
    return out


def new_config_name(name: str) -> str:
    return f"{name[:50]}-c-{uuid.uuid4().hex[:8]}"


def wait_in_service(name: str, config: str, timeout_s: float) -> None:
    """Block until endpoint ``name`` is InService on ``config``; raise on failure or timeout."""
    sm, delay = aws.client("sagemaker"), 1.0
    deadline = time.monotonic() + timeout_s
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        status = desc["EndpointStatus"]
        if status == "InService" and desc["EndpointConfigName"] == config:
            return
        if status in {"Failed", "OutOfService"} or (status == "InService" and desc.get(
                "FailureReason")):
            raise RuntimeError(f"endpoint {name!r} is {status} on config "
                               f"{desc['EndpointConfigName']!r}: "
                               f"{desc.get('FailureReason', 'no reason given')}")
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"endpoint {name!r} still {status} after {timeout_s:.0f} s; raise "
                               "wait_timeout_s or read the endpoint's CloudWatch logs")
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def register_autoscaling(name: str, s: SageMakerSettings) -> None:
    """Register the variant with Application Auto Scaling and attach target tracking."""
    assert s.autoscaling is not None
    aas, a = aws.client("application-autoscaling"), s.autoscaling
    rid = f"endpoint/{name}/variant/{s.variant_name}"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                 ScalableDimension=DIMENSION, MinCapacity=a.min_capacity,
                                 MaxCapacity=a.max_capacity)
    aas.put_scaling_policy(
        PolicyName=f"{name}-invocations-per-instance", ServiceNamespace="sagemaker",
        ResourceId=rid, ScalableDimension=DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": a.target_invocations_per_instance,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": a.scale_in_cooldown_s,
            "ScaleOutCooldown": a.scale_out_cooldown_s})


def scalable_targets(name: str) -> list[dict[str, Any]]:
    """The Application Auto Scaling targets of endpoint ``name``'s variants."""
    aas = aws.client("application-autoscaling")
    pages = aas.get_paginator("describe_scalable_targets").paginate(ServiceNamespace="sagemaker")
    return [t for page in pages for t in page["ScalableTargets"]
            if t["ResourceId"].startswith(f"endpoint/{name}/variant/")]


def deregister_autoscaling(name: str) -> None:
    """Delete the scaling policies and scalable targets of ``name``; absent is not an error."""
    aas = aws.client("application-autoscaling")
    for t in scalable_targets(name):
        rid, dim = t["ResourceId"], t["ScalableDimension"]
        for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker",
                                               ResourceId=rid)["ScalingPolicies"]:
            aas.delete_scaling_policy(PolicyName=p["PolicyName"], ServiceNamespace="sagemaker",
                                      ResourceId=rid, ScalableDimension=dim)
        aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                       ScalableDimension=dim)
