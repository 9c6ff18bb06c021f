"""The execution role of one SageMaker deployment, with a policy that names its resources.

SageMaker assumes this role to pull the serving image, read the model archive and write the
container's logs. The generated inline policy grants exactly that and names each resource:

- ``s3:GetObject`` on ``arn:aws:s3:::<bucket>/<prefix>/*`` (the deployment's model archives);
- ``ecr:BatchGetImage`` / ``GetDownloadUrlForLayer`` / ``BatchCheckLayerAvailability`` on the one
  ECR repository of the serving image; ``ecr:GetAuthorizationToken`` on ``*``, because that action
  has no resource-level permissions in IAM;
- ``logs:CreateLogGroup`` / ``CreateLogStream`` / ``PutLogEvents`` / ``DescribeLogStreams`` on the
  endpoint's log group ``/aws/sagemaker/Endpoints/<endpoint>``.

Creating, tagging and deleting the role is ``deployers.roles``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployers import roles
from deployers.sagemaker.settings import ECR_IMAGE

SERVICE = "sagemaker.amazonaws.com"


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
        return (f"arn:{self.partition}:ecr:{match['region']}:{match['account']}:"
                f"repository/{match['repository']}")

    @property
    def log_group_arn(self) -> str:
        return (f"arn:{self.partition}:logs:{self.region}:{self.account}:"
                f"log-group:/aws/sagemaker/Endpoints/{self.endpoint_name}")


def role_name(endpoint_name: str) -> str:
    """The role name of a deployment (unique per endpoint name, at most 64 characters)."""
    return roles.role_name(endpoint_name, "sagemaker")


def execution_policy(res: RoleResources) -> dict[str, Any]:
    """The least-privilege inline policy; every statement but one names its resource."""
    prefix = res.prefix.strip("/")
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadModelArchives", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:{res.partition}:s3:::{res.bucket}/{prefix}/*"]},
        {"Sid": "PullServingImage", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability"],
         "Resource": [res.repository_arn]},
        {"Sid": "EcrLoginHasNoResourceLevelPermission", "Effect": "Allow",
         "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]},
        {"Sid": "WriteEndpointLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                    "logs:DescribeLogStreams"],
         "Resource": [res.log_group_arn, f"{res.log_group_arn}:*"]},
    ]}


def create_role(res: RoleResources, tags: Mapping[str, str]) -> str:
    """Create the deployment's role with its inline policy; returns the role ARN."""
    return roles.create_role(
        role_name(res.endpoint_name), SERVICE, res.account, "execution", execution_policy(res),
        f"SageMaker execution role of endpoint {res.endpoint_name} (niser-mlops)", tags)
