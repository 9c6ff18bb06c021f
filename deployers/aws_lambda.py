"""AWS Lambda deployments of a registered model: the ONNX zip package, or a container image.

Zip mode (default): the registered model's ``Recommender`` is exported to ONNX and packaged with
a numpy handler and manylinux wheels (``deployers.lambda_package``), <= 250 MB unzipped. Deploy
creates, through ``deployers.aws.client``: an execution role (unless ``role_arn`` is given), the
code archive in S3 when the zip is over the 50 MB direct-upload limit (a bucket too unless
``s3_bucket`` is given), the function (memory, architecture, timeout, runtime, tags), a
published version, an alias pointing at it, reserved concurrency and provisioned concurrency on
the alias. Any failure deletes what was created, newest first, then raises ``DeploymentFailed``.

Image mode: the full torch model in a container image (no size limit but 10 GB). Building it
needs Docker on the user's side; ``deployers/lambda_image/Dockerfile`` is the recipe::

    mlflow artifacts download -u models:/niser@champion -d build/model
    docker build -f deployers/lambda_image/Dockerfile -t niser-lambda \\
        --build-arg RECOMMENDER_DIR=build/model/artifacts/recommender .
    aws ecr create-repository --repository-name niser-lambda
    docker tag niser-lambda <account>.dkr.ecr.<region>.amazonaws.com/niser-lambda:latest
    docker push <account>.dkr.ecr.<region>.amazonaws.com/niser-lambda:latest

then deploy with ``mode="image", image_uri=...``. Without ``image_uri`` image mode is refused
before any AWS call. The local runtime cannot run an image (no Docker here): in image mode the
deployment is control plane only and its invoker calls the real Lambda data plane.

Data plane: with ``local_runtime`` (default when the control plane is on this machine, e.g. a
moto server, whose ``invoke`` does not run handlers without Docker), the package also runs on
``deployers.lambda_runtime.LocalLambda`` (real ``awslambdaric`` processes) and the invoker
calls boto3 ``lambda.invoke`` against it; otherwise against the real Lambda data plane. The
package stays under ``$NISER_LAMBDA_STATE_DIR`` (default ``~/.cache/niser-mlops/lambda``) until
teardown, so another process's ``invoker(name)`` can host it too (cold start in that process).

Cold start: deploy does not invoke the function unless ``warm_up`` is set, so the first request
after deploy is a real cold start for the benchmark to measure.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from deployers import aws, iam
from deployers import lambda_resources as res
from deployers.base import (
    CostDrivers,
    Deployer,
    DeploymentFailed,
    Description,
    Endpoint,
    Settings,
    SettingsError,
)
from deployers.lambda_invoker import LambdaInvoker
from deployers.lambda_package import build_package
from deployers.lambda_runtime import FunctionConfig, LocalLambda

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def control_plane_is_local() -> bool:
    """True when the Lambda control plane is reached on this machine (e.g. a moto server)."""
    for var in ("AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return urlparse(os.environ[var]).hostname in _LOCAL_HOSTS
    return False


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
    reserved_concurrency: int | None = Field(
        None, ge=0, le=1000, description="Reserved concurrency (also the function's limit); "
        "None: the account's unreserved pool.")
    provisioned_concurrency: int = Field(
        0, ge=0, le=1000, description="Environments kept initialised on the alias (warm).")
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
        None, description="Run the package on the local Lambda runtime (data plane); None: "
        "when the control plane is on this machine.")
    warm_up: bool = Field(False, description="Invoke once at deploy (the first request is "
                          "then warm; leave off to measure the cold start).")

    @model_validator(mode="after")
    def _consistent(self) -> LambdaSettings:
        if self.mode == "image" and not self.image_uri:
            raise ValueError("mode='image' needs image_uri (an ECR image built from "
                             "deployers/lambda_image/Dockerfile with Docker); use mode='zip' "
                             "to deploy without Docker")
        if self.mode == "zip" and self.image_uri:
            raise ValueError("image_uri is only for mode='image'")
        if self.reserved_concurrency is not None \
                and self.provisioned_concurrency > self.reserved_concurrency:
            raise ValueError(f"provisioned_concurrency={self.provisioned_concurrency} exceeds "
                             f"reserved_concurrency={self.reserved_concurrency}")
        if self.function_name is not None and not FUNCTION_NAME.match(self.function_name):
            raise ValueError(f"function_name={self.function_name!r}: use 1-64 letters, digits, "
                             "'-' or '_'")
        return self

    def is_local(self) -> bool:
        return control_plane_is_local() if self.local_runtime is None else self.local_runtime


def state_dir() -> Path:
    """Where deployed packages are kept until teardown."""
    env = os.environ.get("NISER_LAMBDA_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "niser-mlops" / "lambda"


def load_recommender(model_uri: str) -> Any:
    """The ``Recommender`` of a registered model (or of a ``Recommender.save`` directory)."""
    from niser.inference import Recommender

    path = Path(model_uri)
    if not (path / "weights.pt").is_file():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        found = [p.parent for p in path.rglob("weights.pt") if (p.parent / "vocab.json").is_file()]
        if not found:
            raise DeploymentFailed(f"{model_uri} holds no Recommender directory (weights.pt, "
                                   "vocab.json, ...); log the model with niser.registry")
        path = found[0]
    return Recommender.load(path)


class LambdaDeployer(Deployer):
    """Deploys the model as a Lambda function; see the module docstring."""

    name: ClassVar[str] = "lambda"
    settings_cls: ClassVar[type[Settings]] = LambdaSettings

    def __init__(self) -> None:
        self._runtime: LocalLambda | None = None
        self._lock = threading.Lock()

    def runtime(self) -> LocalLambda:
        """This deployer's local Lambda service, started on first use."""
        with self._lock:
            if self._runtime is None:
                self._runtime = LocalLambda()
                atexit.register(self.close)
            return self._runtime

    def deploy(self, model_uri: str, settings: Mapping[str, Any] | Settings | None = None,
               name: str | None = None) -> Endpoint:
        """Package, create role/code/function/version/alias/concurrency; see module docstring."""
        s = self.parse_settings(settings)
        assert isinstance(s, LambdaSettings)
        if name and s.function_name and name != s.function_name:
            raise SettingsError(f"name={name!r} and function_name={s.function_name!r} differ; "
                                "the deployment name is the function name: pass one")
        name = s.function_name or name or self.new_name()
        if not FUNCTION_NAME.match(name):
            raise SettingsError(f"name={name!r}: use 1-64 letters, digits, '-' or '_'")
        undo = aws.Undo()
        try:
            self._deploy(model_uri, s, name, undo)
        except Exception as exc:
            problems = undo.run()
            self._forget(name)
            extra = f"; cleanup problems: {problems}" if problems else ""
            raise DeploymentFailed(f"Lambda deployment {name!r} failed and what it created was "
                                   f"deleted: {type(exc).__name__}: {exc}{extra}") from exc
        return Endpoint(self.name, name, model_uri, self._runtime.url if self._runtime and
                        s.is_local() else None, self.invoker(name), s)

    def _deploy(self, model_uri: str, s: LambdaSettings, name: str, undo: aws.Undo) -> None:
        tags = {**s.tags, res.TAG_DEPLOYMENT: name, res.TAG_MODEL_URI: model_uri[:256],
                res.TAG_PROVISIONED: str(s.provisioned_concurrency)}
        package = None
        if s.mode == "zip":
            work = state_dir() / name
            undo.push(f"package {work}", lambda: shutil.rmtree(work, ignore_errors=True))
            package = build_package(load_recommender(model_uri), work, s.runtime, s.architecture)
        role_arn = s.role_arn
        if role_arn is None:
            role, role_arn = res.create_role(name, s.tags)
            undo.push(f"role {role}", lambda: iam.delete_role(role))
            tags[res.TAG_ROLE] = role
        kwargs: dict[str, Any] = {
            "FunctionName": name, "Role": role_arn, "MemorySize": s.memory_mb,
            "Timeout": s.timeout_s, "Architectures": [s.architecture], "Tags": tags,
            "Description": f"NISER recommender {model_uri} (niser-mlops)"[:256]}
        if package is None:
            kwargs.update(PackageType="Image", Code={"ImageUri": s.image_uri})
        else:
            data = package.zip_path.read_bytes()
            kwargs.update(PackageType="Zip", Runtime=s.runtime,
                          Handler="lambda_handler.handler")
            if len(data) <= res.MAX_DIRECT_ZIP_BYTES:
                kwargs["Code"] = {"ZipFile": data}
            else:
                bucket = s.s3_bucket or f"{name.lower().replace('_', '-')[:50]}-code"
                key = f"niser-mlops/{name}/{hashlib.sha256(data).hexdigest()[:16]}.zip"
                res.upload_code(bucket, key, data, create_bucket=s.s3_bucket is None)
                undo.push(f"s3://{bucket}/{key}",
                          lambda: res.delete_code(bucket, key, s.s3_bucket is None))
                kwargs["Code"] = {"S3Bucket": bucket, "S3Key": key}
                tags.update({res.TAG_BUCKET: bucket, res.TAG_KEY: key,
                             res.TAG_BUCKET_CREATED: str(s.s3_bucket is None).lower()})
        client = aws.client("lambda")
        client.create_function(**kwargs)
        undo.push(f"function {name}", lambda: res.delete_function(name))
        res.wait_active(name)
        version = client.publish_version(FunctionName=name)["Version"]
        client.create_alias(FunctionName=name, Name=s.alias, FunctionVersion=version)
        if s.reserved_concurrency is not None:
            client.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=s.reserved_concurrency)
        if s.provisioned_concurrency:
            res.put_provisioned_concurrency(client, name, s.alias, s.provisioned_concurrency,
                                            control_plane_is_local())
        if s.is_local() and package is not None:
            self._host(name, package.root, s, {s.alias: version})
            undo.push(f"local function {name}", lambda: self._forget(name))
        if s.warm_up:
            self.invoker(name)([[1]], 1)

    def _host(self, name: str, root: Path, s: LambdaSettings, aliases: dict[str, str]) -> None:
        self.runtime().add_function(FunctionConfig(
            name=name, code_dir=root, memory_mb=s.memory_mb, timeout_s=float(s.timeout_s),
            reserved_concurrency=s.reserved_concurrency, runtime=s.runtime, aliases=aliases,
            provisioned_concurrency=s.provisioned_concurrency))

    def _forget(self, name: str) -> None:
        if self._runtime is not None:
            self._runtime.remove_function(name)

    def invoker(self, name: str) -> LambdaInvoker:
        """Calls ``name``'s alias; hosts its package locally first when local (see docstring)."""
        tags = res.function_tags(name)  # KeyError when absent
        cfg = aws.client("lambda").get_function_configuration(FunctionName=name)
        aliases = aws.client("lambda").list_aliases(FunctionName=name)["Aliases"]
        alias = aliases[0]["Name"] if aliases else None
        local = cfg.get("PackageType", "Zip") == "Zip" and control_plane_is_local()
        if self._runtime is not None and name in self._runtime.functions():
            local = True
        elif local:
            root = state_dir() / name / f"package-{cfg.get('Runtime')}-" \
                f"{(cfg.get('Architectures') or ['x86_64'])[0]}"
            if not root.is_dir():
                raise KeyError(f"the package of {name!r} is not at {root}; redeploy it")
            conc = aws.client("lambda").get_function_concurrency(FunctionName=name)
            s = LambdaSettings.model_validate({
                "memory_mb": cfg["MemorySize"], "timeout_s": cfg["Timeout"],
                "runtime": cfg.get("Runtime", "python3.11"),
                "reserved_concurrency": conc.get("ReservedConcurrentExecutions"),
                "provisioned_concurrency": int(tags.get(res.TAG_PROVISIONED, 0))})
            self._host(name, root, s, {a["Name"]: a["FunctionVersion"] for a in aliases})
        url = self.runtime().url if local else None
        return LambdaInvoker(name, alias, url, read_timeout_s=cfg["Timeout"] + 15)

    def describe(self, name: str) -> Description:
        """Memory, architecture, concurrency and state of ``name``; ``KeyError`` if absent."""
        tags = res.function_tags(name)
        client = aws.client("lambda")
        cfg = client.get_function_configuration(FunctionName=name)
        reserved = client.get_function_concurrency(FunctionName=name).get(
            "ReservedConcurrentExecutions")
        arch = (cfg.get("Architectures") or ["x86_64"])[0]
        cost = CostDrivers(kind="lambda", memory_mb=cfg["MemorySize"], architecture=arch,
                           provisioned_concurrency=int(tags.get(res.TAG_PROVISIONED, 0)),
                           max_concurrency=reserved)
        details = {"runtime": cfg.get("Runtime", "image"), "timeout_s": cfg["Timeout"],
                   "package_type": cfg.get("PackageType", "Zip"), "code_bytes": cfg["CodeSize"],
                   "model_uri": tags.get(res.TAG_MODEL_URI, ""),
                   "local_runtime": bool(self._runtime and name in self._runtime.functions())}
        return Description(self.name, name, cfg.get("State", "Active"), cost, details)

    def list(self) -> list[str]:
        """Functions tagged as niser-mlops deployments."""
        client = aws.client("lambda")
        names = []
        for page in client.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                tags = client.list_tags(Resource=fn["FunctionArn"]).get("Tags", {})
                if res.TAG_DEPLOYMENT in tags:
                    names.append(fn["FunctionName"])
        return sorted(names)

    def teardown(self, name: str) -> None:
        """Delete the function (versions and alias with it), its S3 code, the role it created
        and its local package. Idempotent."""
        self._forget(name)
        try:
            tags = res.function_tags(name)
        except KeyError:
            tags = {}
        res.delete_function(name)
        if res.TAG_BUCKET in tags:
            res.delete_code(tags[res.TAG_BUCKET], tags[res.TAG_KEY],
                            tags.get(res.TAG_BUCKET_CREATED) == "true")
        if res.TAG_ROLE in tags:
            iam.delete_role(tags[res.TAG_ROLE])
        shutil.rmtree(state_dir() / name, ignore_errors=True)

    def close(self) -> None:
        """Stop the local runtime (its environments' processes)."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

