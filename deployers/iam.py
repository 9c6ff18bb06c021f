"""The execution role of one SageMaker deployment, with a policy that names its resources.

SageMaker assumes this role to pull the serving image, read the model archive and write the
container's logs. The generated inline policy grants exactly that and names each resource:

- ``s3:GetObject`` on ``arn:aws:s3:::<bucket>/<prefix>/*`` (the deployment's model archives);
- ``ecr:BatchGetImage`` / ``GetDownloadUrlForLayer`` / ``BatchCheckLayerAvailability`` on the one
  ECR repository of the serving image; ``ecr:GetAuthorizationToken`` on ``*``, because that action
  has no resource-level permissions in IAM;
- ``logs:CreateLogGroup`` / ``CreateLogStream`` / ``PutLogEvents`` / ``DescribeLogStreams`` on the
  endpoint's log group ``/aws/sagemaker/Endpoints/<endpoint>``.

The trust policy lets only ``sagemaker.amazonaws.com`` assume the role, and only on behalf of the
same account (``aws:SourceAccount``), which guards against the confused-deputy problem.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deployers import aws
from deployers.sagemaker_settings import ECR_IMAGE

# A role created a moment ago can take a few seconds before SageMaker may assume it.
ROLE_PROPAGATION_S = 60.0


@dataclass(frozen=True)
class RoleResources:
    """What one deployment's role may touch."""

    account: str
    region: str
    partition: str
    endpoint_name: str
    bucket: str
    prefix: str
    image_url: str

    @property
    def repository_arn(self) -> str:
        match = ECR_IMAGE.match(self.image_url)
        if match is None:
            raise ValueError(f"image_url={self.image_url!r} is not an ECR image URI")
        return (
            f"arn:{self.partition}:ecr:{match['region']}:{match['account']}:"
            f"repository/{match['repository']}"
        )

    @property
    def log_group_arn(self) -> str:
        return (
            f"arn:{self.partition}:logs:{self.region}:{self.account}:"
            f"log-group:/aws/sagemaker/Endpoints/{self.endpoint_name}"
        )


def role_name(endpoint_name: str) -> str:
    """The role name of a deployment (IAM allows 64 characters)."""
    return f"{endpoint_name[:50]}-sagemaker"


def trust_policy(account: str) -> dict[str, Any]:
    """Only SageMaker, acting for ``account``, may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }],
    }


def execution_policy(res: RoleResources) -> dict[str, Any]:
    """The least-privilege inline policy; every statement but one names its resource."""
    prefix = res.prefix.strip("/")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadModelArchives",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:{res.partition}:s3:::{res.bucket}/{prefix}/*"],
            },
            {
                "Sid": "PullServingImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": [res.repository_arn],
            },
            {
                "Sid": "EcrLoginHasNoResourceLevelPermission",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": ["*"],
            },
            {
                "Sid": "WriteEndpointLogs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                "Resource": [res.log_group_arn, f"{res.log_group_arn}:*"],
            },
        ],
    }


def create_role(res: RoleResources, tags: dict[str, str]) -> str:
    """Create the role with its inline policy; returns the role ARN."""
    iam = aws.client("iam")
    name = role_name(res.endpoint_name)
    arn: str = iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust_policy(res.account)),
        Description=f"SageMaker execution role of endpoint {res.endpoint_name} (niser-mlops)",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["Role"]["Arn"]
    try:
        iam.put_role_policy(
            RoleName=name, PolicyName="execution", PolicyDocument=json.dumps(execution_policy(res))
        )
    except Exception:
        delete_role(name)
        raise
    return arn


def delete_role(name: str) -> bool:
    """Delete the role and its inline policies; ``False`` when it did not exist."""
    iam = aws.client("iam")
    try:
        policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchEntity":
            return False
        raise
    for policy in policies:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    iam.delete_role(RoleName=name)
    return True


def role_tags(name: str) -> dict[str, str]:
    """Tags of role ``name``; empty when the role does not exist."""
    try:
        tags = aws.client("iam").list_role_tags(RoleName=name)["Tags"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchEntity":
            return {}
        raise
    return {t["Key"]: t["Value"] for t in tags}


def is_propagation_error(exc: BaseException) -> bool:
    """True when SageMaker could not assume a just-created role yet (retry, it will settle)."""
    if not isinstance(exc, ClientError):
        return False
    message = str(exc.response["Error"].get("Message", "")).lower()
    return exc.response["Error"]["Code"] == "ValidationException" and "assume" in message


def wait_before_retry(started: float, attempt: int) -> bool:
    """Sleep before the next try while the role may still be propagating; False when out of time."""
    delay = min(2.0 * 2**attempt, 10.0)
    if time.monotonic() - started + delay > ROLE_PROPAGATION_S:
        return False
    time.sleep(delay)
    return True
