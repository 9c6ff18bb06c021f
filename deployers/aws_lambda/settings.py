"""Settings of a Lambda deployment: package mode, memory, architecture, runtime, concurrency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from deployers import aws
from deployers.base import NAME_RULE, NAME_RULE_TEXT, Settings, SettingsError
from deployers.standins.lambda_shape import ACCOUNT_CONCURRENCY, UNRESERVED_MINIMUM

MAX_FUNCTION_CONCURRENCY = ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM


def _concurrency(value: int) -> int:
    if value > MAX_FUNCTION_CONCURRENCY:
        raise ValueError(f"{value!r} is above the limit of {MAX_FUNCTION_CONCURRENCY:,}: the"
                         f" account's concurrency limit is {ACCOUNT_CONCURRENCY:,} by default and"
                         f" Lambda keeps {UNRESERVED_MINIMUM} of it unreserved")
    return value


Concurrency = Annotated[int, AfterValidator(_concurrency),
                        Field(json_schema_extra={"maximum": MAX_FUNCTION_CONCURRENCY})]


class LambdaSettings(Settings):
    """Settings of a Lambda deployment."""

    mode: Literal["zip", "image"] = Field(
        "zip", description="zip: ONNX package (<= 250 MB unzipped); image: torch container "
        "image given by image_uri (built with Docker on the user's side).")
    image_uri: str | None = Field(None, description="ECR image URI for mode='image'.")
    memory_mb: int = Field(3008, ge=128, le=10240, description="Memory size in MB (128..10240);"
                           " Lambda gives 1 vCPU per 1,769 MB.")
    architecture: Literal["x86_64", "arm64"] = Field("x86_64", description="CPU architecture.")
    runtime: Literal["python3.11", "python3.12"] = Field(
        "python3.11", description="Lambda Python runtime of the zip package.")
    timeout_s: int = Field(30, ge=1, le=900, description="Function timeout in seconds.")
    reserved_concurrency: Concurrency | None = Field(
        None, ge=0, description="Reserved concurrency (also the function's limit); "
        f"None: the account's unreserved pool. At most {MAX_FUNCTION_CONCURRENCY}.")
    provisioned_concurrency: Concurrency = Field(
        0, ge=0, description="Environments kept initialised on the alias (warm); at most "
        f"{MAX_FUNCTION_CONCURRENCY}, and in local mode as many as this machine's memory holds.")
    role_arn: str | None = Field(None, description="Execution role; None creates one that "
                                 "may write only this function's logs.")
    function_name: str | None = Field(None, description="Function name; default: the "
                                      "deployment name.")
    alias: str = Field("live", pattern=r"^[A-Za-z0-9_-]{1,128}$",
                       description="Alias pointing at the published version.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every resource.")
    s3_bucket: str | None = Field(None, description="Bucket for zips over 50 MB; None "
                                  "creates one for the deployment.")
    local_runtime: bool | None = Field(
        None, description="Run the package on the local Lambda stand-in (data plane); None: "
        "when the Lambda control plane is on this machine.")
    warm_up: bool = Field(False, description="Invoke once at deploy (the first request is "
                          "then warm; leave off to measure the cold start).")

    @model_validator(mode="after")
    def _consistent(self) -> LambdaSettings:
        if self.mode == "image" and not self.image_uri:
            raise ValueError("mode='image' needs image_uri (an ECR image built from "
                             "niser/lambda_image/Dockerfile with Docker); use mode='zip' "
                             "to deploy without Docker")
        if self.mode == "zip" and self.image_uri:
            raise ValueError("image_uri is only for mode='image'")
        if self.reserved_concurrency is not None \
                and self.provisioned_concurrency > self.reserved_concurrency:
            raise ValueError(f"provisioned_concurrency={self.provisioned_concurrency} exceeds "
                             f"reserved_concurrency={self.reserved_concurrency}")
        if self.function_name is not None and not NAME_RULE.match(self.function_name):
            raise ValueError(f"function_name={self.function_name!r}: the function name is the "
                             f"deployment name, {NAME_RULE_TEXT}")
        return self

    def is_local(self) -> bool:
        """Whether the package runs on the local Lambda stand-in."""
        return aws.endpoint_is_local("lambda") if self.local_runtime is None \
            else self.local_runtime


def check_fields(raw: Mapping[str, Any]) -> None:
    """Refuse, with ``SettingsError`` naming each one, the unknown keys and the invalid values of
    a partial ``raw`` (field by field: what needs the other fields is checked once they are
    known). Makes no call."""
    problems = []
    for key, value in raw.items():
        info = LambdaSettings.model_fields.get(key)
        if info is None:
            valid = ", ".join(sorted(LambdaSettings.model_fields))
            problems.append(f"  unknown key {key!r}; valid keys: {valid}")
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(
                Annotated[info.annotation, info])  # type: ignore[arg-type]
            adapter.validate_python(value)
        except ValidationError as exc:
            problems += [f"  {key}={value!r}: {err['msg']}" for err in exc.errors()]
    if problems:
        raise SettingsError("\n".join(["invalid LambdaSettings:", *problems]))
