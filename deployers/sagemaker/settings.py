"""Settings of the SageMaker deployer: a real-time endpoint on instances, or a serverless one.

Every check here runs before any AWS call, so a bad value never leaves anything behind. The
messages name the field, the offending value and the valid values (see ``deployers.base``).
"""

from __future__ import annotations

import re
from typing import Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deployers.serving import ServingSettings

# Instance types offered by this project, CPU then GPU. The price table in bench/ prices these;
# deployers/sagemaker/instances.json gives each one's vCPUs, cores, memory and GPUs.
InstanceType = Literal["ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge",
                       "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge",
                       "ml.g4dn.xlarge", "ml.g4dn.2xlarge"]
INSTANCE_TYPES: tuple[str, ...] = get_args(InstanceType)

# <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[A-Za-z0-9_.-]{1,128}))?$"
)
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TAG_CHARS = re.compile(r"^[\w\s.:/=+\-@]*$")
# field -> (pattern, what a valid value looks like)
_SHAPES: dict[str, tuple[re.Pattern[str], str]] = {
    "image_url": (ECR_IMAGE, "an ECR image URI <account>.dkr.ecr.<region>.amazonaws.com/"
                  "<repo>:<tag>, e.g. the one printed by `mlflow sagemaker "
                  "build-and-push-container`"),
    "execution_role_arn": (ROLE_ARN, "an IAM role ARN arn:aws:iam::<12-digit account>:role/"
                           "<name>"),
    "bucket": (BUCKET, "an S3 bucket name: 3-63 lowercase letters, digits, . or -"),
}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Serverless(_Part):
    """A serverless variant: billed per GB-second of memory while serving, no instances."""

    memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(
        2048, description="Memory of each serverless worker in MB: 1024..6144 in steps of 1024."
    )
    max_concurrency: int = Field(
        5, ge=1, le=200, description="Most concurrent invocations (1..200) before throttling."
    )


class Autoscaling(_Part):
    """Target tracking on invocations per instance, registered with Application Auto Scaling."""

    min_capacity: int = Field(1, ge=1, description="Fewest instances the variant scales in to.")
    max_capacity: int = Field(2, ge=1, description="Most instances the variant scales out to.")
    target_invocations_per_instance: float = Field(
        ..., gt=0,
        description="Target of the SageMakerVariantInvocationsPerInstance metric "
        "(invocations per instance per minute) that the policy tracks.",
    )
    scale_in_cooldown_s: int = Field(300, ge=0, description="Seconds between scale-in actions.")
    scale_out_cooldown_s: int = Field(60, ge=0, description="Seconds between scale-out actions.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_capacity > self.max_capacity:
            raise ValueError(
                f"min_capacity={self.min_capacity} exceeds max_capacity={self.max_capacity}; "
                "make min_capacity <= max_capacity"
            )
        return self


class SageMakerSettings(ServingSettings):
    """How a model is hosted on a SageMaker endpoint. Unknown keys are refused."""

    instance_type: InstanceType = Field(
        "ml.c5.large",
        description=f"Instance type of a real-time variant; one of {INSTANCE_TYPES}. Served "
        "locally, each instance runs shaped like the type (its vCPUs and memory); a type of more "
        "vCPUs than this machine's cores is refused there.",
    )
    instance_count: int = Field(1, ge=1, description="Instances behind a real-time variant (>= 1).")
    autoscaling: Autoscaling | None = Field(
        None, description="Target tracking autoscaling of a real-time variant; none when absent."
    )
    serverless: Serverless | None = Field(
        None, description="Host as a serverless variant instead of on instances."
    )
    image_url: str | None = Field(
        None,
        description="ECR URI of the mlflow-pyfunc serving image. Default: "
        "<account>.dkr.ecr.<region>.amazonaws.com/mlflow-pyfunc:<mlflow version>, the name "
        "`mlflow sagemaker build-and-push-container` pushes (building it needs Docker).",
    )
    execution_role_arn: str | None = Field(
        None,
        description="IAM role SageMaker assumes to pull the image and model. Default: a role "
        "created for this deployment with a policy naming only its resources, deleted with it.",
    )
    bucket: str | None = Field(
        None, description="S3 bucket of model.tar.gz. Default: mlflow-sagemaker-<region>-<account>."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags put on every resource created (at most 40)."
    )
    variant_name: str = Field(
        "AllTraffic", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="Name of the production variant.",
    )
    model_server_workers: int | None = Field(
        None, ge=1, le=64,
        description="Scoring-server workers per instance (MLFLOW_MODELS_WORKERS); default: the "
        "instance type's vCPUs, each with vCPUs / workers torch threads (OMP_NUM_THREADS).",
    )
    local: bool | None = Field(
        None,
        description="Serve invocations through the local SageMaker stand-in (nginx + `mlflow "
        "models serve`, one cgroup-shaped server per instance). Default: on when the SageMaker "
        "control plane is on this machine.",
    )
    wait_timeout_s: float = Field(
        1800.0, gt=0, description="Seconds to wait for the endpoint to reach InService."
    )

    @field_validator("image_url", "execution_role_arn", "bucket")
    @classmethod
    def _shaped(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, expected = _SHAPES[str(info.field_name)]
        if value is not None and not pattern.match(value):
            raise ValueError(f"expected {expected}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 40:
            raise ValueError(f"{len(value)} tags given; at most 40 (the project adds its own)")
        for key, val in value.items():
            if not 1 <= len(key) <= 128 or key.lower().startswith("aws:") or key.startswith(
                "niser-mlops:"
            ):
                raise ValueError(
                    f"tag key {key!r} must be 1-128 characters and not start with 'aws:' or "
                    "'niser-mlops:'"
                )
            if len(val) > 256 or not _TAG_CHARS.match(key + val):
                raise ValueError(
                    f"tag {key!r}={val!r}: values are at most 256 characters of letters, digits, "
                    "spaces and _ . : / = + - @"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.serverless is not None:
            clash = {"instance_type", "instance_count", "autoscaling"} & self.model_fields_set
            if clash:
                raise ValueError(
                    f"serverless cannot be combined with {sorted(clash)}: a serverless variant "
                    "has no instances; drop those keys or drop serverless"
                )
        if self.autoscaling is not None and not (
            self.autoscaling.min_capacity <= self.instance_count <= self.autoscaling.max_capacity
        ):
            raise ValueError(
                f"instance_count={self.instance_count} lies outside autoscaling "
                f"[{self.autoscaling.min_capacity}, {self.autoscaling.max_capacity}]; "
                "start inside the autoscaling range"
            )
        return self
