"""Settings of a SageMaker training job (``deployers.sagemaker.training``): every field is checked
before any AWS call, and a refusal names the field."""

from __future__ import annotations

from typing import Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployers.sagemaker.settings import BUCKET, ECR_IMAGE, ROLE_ARN

# Instance types offered for training (SageMaker trains on ml.c5.xlarge and up, not .large);
# each has a training price in bench/prices.json (a test checks it).
TrainingInstanceType = Literal["ml.c5.xlarge", "ml.c5.2xlarge", "ml.m5.large", "ml.m5.xlarge",
                               "ml.g4dn.xlarge", "ml.g4dn.2xlarge"]
TRAINING_INSTANCE_TYPES: tuple[str, ...] = get_args(TrainingInstanceType)


class TrainingSettings(BaseModel):
    """Where and how a training job runs; every field is checked before any AWS call."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    instance_type: TrainingInstanceType = Field(
        "ml.m5.xlarge", description="Training instance type: ml.c5.xlarge, ml.c5.2xlarge, "
        "ml.m5.large, ml.m5.xlarge, ml.g4dn.xlarge, ml.g4dn.2xlarge.")
    instance_count: int = Field(1, ge=1, le=16, description="Instances of the job (1..16).")
    volume_gb: int = Field(30, ge=1, le=16384, description="Storage volume per instance, GB.")
    max_runtime_s: int = Field(24 * 3600, gt=0, le=28 * 24 * 3600,
                               description="The job is stopped after this many seconds.")
    spot: bool = Field(False, description="Managed spot training (checkpoints on S3 on).")
    max_wait_s: int | None = Field(None, gt=0, description="Spot: the most seconds to wait "
                                   "for and run on spot capacity (>= max_runtime_s); default "
                                   "2 x max_runtime_s.")
    checkpoints: bool | None = Field(None, description="Keep epoch checkpoints on S3 (a "
                                     "restarted job resumes); default: on with spot.")
    image_uri: str | None = Field(None, description="Training image; default: the AWS PyTorch "
                                  "training container, looked up with the sagemaker SDK.")
    role_arn: str | None = Field(None, description="Execution role; default: one made for "
                                 "the job and deleted after it.")
    bucket: str | None = Field(None, description="S3 bucket of inputs and outputs; default: "
                               "the one the SageMaker deployer uses.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name, pattern in (("image_uri", ECR_IMAGE), ("role_arn", ROLE_ARN),
                              ("bucket", BUCKET)):
            value = getattr(self, name)
            if value is not None and not pattern.match(value):
                raise ValueError(f"{name}={value!r} is not a valid {name.replace('_', ' ')}")
        if self.max_wait_s is not None and not self.spot:
            raise ValueError("max_wait_s applies to spot training only: set spot=true or drop it")
        if self.spot and self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            raise ValueError(f"max_wait_s={self.max_wait_s} must be >= max_runtime_s="
                             f"{self.max_runtime_s} (SageMaker's rule for spot training)")
        return self

    @property
    def keeps_checkpoints(self) -> bool:
        return self.spot if self.checkpoints is None else self.checkpoints
