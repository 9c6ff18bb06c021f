"""The AWS resources of one Lambda deployment, each made and unmade by one function.

Every call goes through ``deployers.aws.client``. Deletes treat "already gone" as success.
The function carries tags that record what the deployment created, so any process can tear it
down: ``TAG_DEPLOYMENT``, ``TAG_ROLE`` (a role made for it), ``TAG_BUCKET``/``TAG_KEY`` (the
code archive in S3, with ``TAG_BUCKET_CREATED`` when the bucket was made for it too),
``TAG_PROVISIONED`` (the provisioned concurrency asked for) and ``TAG_MODEL_URI``.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from deployers import aws, roles
from deployers.aws import absent
from deployers.ownership import TAG_DEPLOYMENT as TAG_DEPLOYMENT  # re-exported: one home

TAG_MODEL_URI = "niser-mlops:model-uri"
TAG_ROLE = "niser-mlops:created-role"
TAG_BUCKET = "niser-mlops:code-bucket"
TAG_KEY = "niser-mlops:code-key"
TAG_BUCKET_CREATED = "niser-mlops:code-bucket-created"
TAG_PROVISIONED = "niser-mlops:provisioned-concurrency"
SERVICE = "lambda.amazonaws.com"
HANDLER = "lambda_handler.handler"
# CreateFunction takes a zip of at most 50 MB in the request; larger ones go through S3.
MAX_DIRECT_ZIP_BYTES = 50 * 1024 * 1024


def role_name(function: str) -> str:
    """The execution role name of ``function`` (unique per function, at most 64 characters)."""
    return roles.role_name(function, "lambda")


def create_role(function: str, role: str, tags: dict[str, str]) -> str:
    """Role ``role``: Lambda may assume it, and it may write only ``function``'s logs.

    Returns the role ARN.
    """
    sts = aws.client("sts").get_caller_identity()
    account, partition = sts["Account"], sts["Arn"].split(":")[1]
    group = f"arn:{partition}:logs:{aws.region()}:{account}:log-group:/aws/lambda/{function}"
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "WriteFunctionLogs", "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [group, f"{group}:*"]}]}
    return roles.create_role(role, SERVICE, account, "logs", policy,
                             f"Execution role of Lambda function {function} (niser-mlops)", tags)


def upload_code(bucket: str, key: str, data: bytes, create_bucket: bool) -> None:
    """Put the zip at ``s3://bucket/key``, creating the bucket first when asked."""
    s3 = aws.client("s3")
    if create_bucket:
        region = aws.region()
        kwargs: dict[str, Any] = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **kwargs)
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def delete_code(bucket: str, key: str, delete_bucket: bool) -> None:
    s3 = aws.client("s3")
    try:
        s3.delete_object(Bucket=bucket, Key=key)
        if delete_bucket:
            s3.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if not absent(exc):
            raise


def wait_active(function: str, timeout_s: float = 300.0) -> None:
    """Block until the function (and its last update) is ready to invoke."""
    client = aws.client("lambda")
    deadline = time.monotonic() + timeout_s
    while True:
        cfg = client.get_function_configuration(FunctionName=function)
        state, update = cfg.get("State", "Active"), cfg.get("LastUpdateStatus", "Successful")
        if state == "Failed" or update == "Failed":
            raise RuntimeError(f"function {function} failed: {cfg.get('StateReason')} "
                               f"{cfg.get('LastUpdateStatusReason', '')}")
        if state == "Active" and update == "Successful":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"function {function} is still {state}/{update} after "
                               f"{timeout_s:.0f} s")
        time.sleep(2.0)


def function_tags(function: str) -> dict[str, str]:
    """Tags of ``function``; ``KeyError`` when it does not exist."""
    try:
        got = aws.client("lambda").get_function(FunctionName=function)
    except ClientError as exc:
        if absent(exc):
            raise KeyError(f"no Lambda function {function!r}") from None
        raise
    return dict(got.get("Tags") or {})


def delete_function(function: str) -> None:
    try:
        aws.client("lambda").delete_function(FunctionName=function)
    except ClientError as exc:
        if not absent(exc):
            raise


def put_provisioned_concurrency(client: Any, function: str, alias: str, count: int,
                                control_plane_is_local: bool) -> bool:
    """Ask for ``count`` provisioned environments on ``alias``.

    Returns False, without failing, only when a control plane on this machine does not
    implement the call (moto answers 404): the count is then recorded in ``TAG_PROVISIONED``
    alone, and the local runtime pre-starts the environments itself.
    """
    try:
        client.put_provisioned_concurrency_config(
            FunctionName=function, Qualifier=alias, ProvisionedConcurrentExecutions=count)
        return True
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if control_plane_is_local and status == 404 and aws.error_code(exc) != \
                "ResourceNotFoundException":
            return False
        raise


def wait_provisioned(function: str, qualifier: str, timeout_s: float = 900.0) -> None:
    """Block until the provisioned concurrency of ``qualifier`` is READY; ``RuntimeError`` when
    it FAILED, ``TimeoutError`` after ``timeout_s``."""
    client = aws.client("lambda")
    deadline = time.monotonic() + timeout_s
    while True:
        got = client.get_provisioned_concurrency_config(FunctionName=function,
                                                        Qualifier=qualifier)
        status = got.get("Status", "READY")
        if status == "READY":
            return
        if status == "FAILED":
            raise RuntimeError(f"provisioned concurrency of {function}:{qualifier} failed: "
                               f"{got.get('StatusReason', '')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"provisioned concurrency of {function}:{qualifier} is still "
                               f"{status} after {timeout_s:.0f} s")
        time.sleep(2.0)


def delete_provisioned_concurrency(function: str, qualifier: str,
                                   control_plane_is_local: bool) -> None:
    """Remove the provisioned concurrency of ``qualifier``; absent is not an error, nor (as in
    ``put_provisioned_concurrency``) a control plane on this machine that lacks the call."""
    try:
        aws.client("lambda").delete_provisioned_concurrency_config(
            FunctionName=function, Qualifier=qualifier)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if not (absent(exc) or (control_plane_is_local and status == 404)):
            raise


def versions(function: str) -> set[str]:
    """The published versions of ``function`` (``$LATEST`` left out)."""
    pages = aws.client("lambda").get_paginator("list_versions_by_function").paginate(
        FunctionName=function)
    return {v["Version"] for page in pages for v in page["Versions"]
            if v["Version"] != "$LATEST"}


def delete_version(function: str, version: str) -> None:
    """Delete one published version (never ``$LATEST``: that would delete the function)."""
    if not version.isdigit():
        raise ValueError(f"version {version!r} of {function} is not a published version")
    try:
        aws.client("lambda").delete_function(FunctionName=function, Qualifier=version)
    except ClientError as exc:
        if not absent(exc):
            raise


def delete_versions(function: str, versions: set[str]) -> None:
    for version in sorted(versions):
        delete_version(function, version)


def set_reserved_concurrency(function: str, count: int | None) -> None:
    """Reserve ``count`` concurrent executions for ``function``; ``None``: the unreserved pool."""
    client = aws.client("lambda")
    if count is None:
        client.delete_function_concurrency(FunctionName=function)
    else:
        client.put_function_concurrency(FunctionName=function,
                                        ReservedConcurrentExecutions=count)
