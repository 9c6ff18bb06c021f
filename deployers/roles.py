"""IAM execution roles, shared by every AWS target: create one with its inline policy, find it,
delete it, and wait out IAM's propagation delay.

A role is named after its deployment (``role_name``), tagged with it, trusted by one service
principal on behalf of one account (``aws:SourceAccount``, against the confused-deputy problem),
and carries one inline policy that the target writes (naming its resources). Deleting removes
inline and attached policies first; an absent role is not an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from deployers import aws

if TYPE_CHECKING:
    from deployers.base import Undo

# A role created a moment ago can take a few seconds before a service may assume it.
ROLE_PROPAGATION_S = 60.0
MAX_ROLE_NAME = 64


def role_name(deployment: str, suffix: str) -> str:
    """``<deployment>-<suffix>``, or, when that exceeds IAM's 64 characters, a cut deployment
    name plus a hash of the whole, so two long names never share a role."""
    full = f"{deployment}-{suffix}"
    if len(full) <= MAX_ROLE_NAME:
        return full
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:8]
    keep = MAX_ROLE_NAME - len(suffix) - len(digest) - 2
    return f"{deployment[:keep]}-{digest}-{suffix}"


def trust_policy(service: str, account: str) -> dict[str, Any]:
    """Only ``service`` (e.g. ``lambda.amazonaws.com``), acting for ``account``, may assume it."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]}


def create_role(name: str, service: str, account: str, policy_name: str,
                policy: Mapping[str, Any], description: str, tags: Mapping[str, str]) -> str:
    """Create role ``name`` trusted by ``service`` with one inline policy; returns its ARN.

    When the policy cannot be attached the role is deleted again before the error propagates.
    """
    iam = aws.client("iam")
    arn: str = iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(trust_policy(service, account)),
        Description=description[:1000], Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["Role"]["Arn"]
    try:
        iam.put_role_policy(RoleName=name, PolicyName=policy_name,
                            PolicyDocument=json.dumps(policy))
    except BaseException:
        delete_role(name)
        raise
    return arn


def create_owned(undo: Undo, name: str, create: Callable[[], str]) -> str:
    """``create()`` (which makes role ``name``; returns its ARN) with the role's deletion on
    ``undo``, registered before the call (a timed-out call may still have made it), unless IAM
    answers that the role already existed: a role this call did not make is never deleted, and
    the deploy stops with a ``DeployerError`` naming it."""
    from deployers.base import DeployerError

    made_here = [True]
    undo.push(f"role {name}", lambda: made_here[0] and delete_role(name))
    try:
        return create()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
            raise
        made_here[0] = False
        raise DeployerError(f"IAM role {name} already exists and belongs to something else (a "
                            "deployment of the same name, or one left behind); it was left "
                            "as it is: pick another deployment name or delete the role") from None


def delete_role(name: str) -> bool:
    """Delete the role and its policies; ``False`` when it did not exist."""
    iam = aws.client("iam")
    try:
        policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
    except ClientError as exc:
        if aws.absent(exc):
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
        if aws.absent(exc):
            return {}
        raise
    return {t["Key"]: t["Value"] for t in tags}


def is_propagation_error(exc: BaseException) -> bool:
    """True when a service could not assume a just-created role yet (retry, it will settle)."""
    if not isinstance(exc, ClientError):
        return False
    message = str(exc.response["Error"].get("Message", "")).lower()
    return exc.response["Error"]["Code"] in {"ValidationException",
                                             "InvalidParameterValueException"} \
        and "assume" in message


def wait_before_retry(started: float, attempt: int) -> bool:
    """Sleep before the next try while the role may still be propagating; False when out of time."""
    delay = min(2.0 * 2**attempt, 10.0)
    if time.monotonic() - started + delay > ROLE_PROPAGATION_S:
        return False
    time.sleep(delay)
    return True
