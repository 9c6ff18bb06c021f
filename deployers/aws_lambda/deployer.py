"""AWS Lambda deployments of a registered model: the ONNX zip package, or a container image.

Zip mode (default): the registered model's function code (its ``lambda`` artifact: the ONNX
graph, a numpy handler, ``requirements.txt``) is packaged with manylinux wheels
(``package``, ``wheels``), <= 250 MB unzipped. Deploy creates, through
``deployers.aws.client``: an execution role (unless ``role_arn`` is given), the code archive
in S3 when the zip is over the 50 MB direct-upload limit (a bucket too unless ``s3_bucket`` is
given), the function (memory, architecture, timeout, runtime, tags), a
published version, an alias pointing at it, reserved concurrency and provisioned concurrency on
that version. Each is pushed on the deploy's undo stack before it is created, so a failure or a
Ctrl-C anywhere deletes what exists (the base's deploy policy).

Image mode: the full torch model in a container image (no size limit but 10 GB). Building it
needs Docker on the user's side; ``niser/lambda_image/Dockerfile`` is the recipe::

    mlflow artifacts download -u models:/niser@champion -d build/model
    docker build -f niser/lambda_image/Dockerfile -t niser-lambda \\
        --build-arg RECOMMENDER_DIR=build/model/artifacts/recommender .
    aws ecr create-repository --repository-name niser-lambda
    docker tag niser-lambda <account>.dkr.ecr.<region>.amazonaws.com/niser-lambda:latest
    docker push <account>.dkr.ecr.<region>.amazonaws.com/niser-lambda:latest

then deploy with ``mode="image", image_uri=...``. Without ``image_uri`` image mode is refused
before any AWS call. The local stand-in cannot run an image (no Docker here): in image mode the
deployment is control plane only and its invoker calls the real Lambda data plane.

Data plane: with ``local_runtime`` (default when the control plane is on this machine, e.g. a
moto server, whose ``invoke`` does not run handlers without Docker), the package also runs on
the process's Lambda stand-in (``deployers.standins``: real ``awslambdaric`` processes) and the
invoker calls boto3 ``lambda.invoke`` against it; otherwise against the real Lambda data plane.
Each environment there is shaped as Lambda shapes its memory size when this machine can (a
cgroup per environment: 1 vCPU per 1,769 MB, the memory size as its limit); ``describe`` says
how (``shaping``, ``cpu_share``), ``usage`` and ``capacity`` read it, and both are ``None``
against AWS. The package stays under ``standins.code_dir()`` until teardown, so another
process's ``invoker(name)`` can host it too (cold start in that process).

Update: ``update`` moves the alias to a new version of the function without an outage (the new
version, its provisioned concurrency and its local environments ready before the one
``update_alias`` call; see ``update``). Everything reads what the alias serves: the configuration
of its version, that version's package (``code_dir()/<name>/v<version>`` after an update).

Cold start: deploy does not invoke the function unless ``warm_up`` is set, so the first request
after deploy is a real cold start for the benchmark to measure.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from deployers import aws, roles, standins
from deployers.aws_lambda import resources as res
from deployers.aws_lambda import update as upd
from deployers.aws_lambda.invoker import LambdaInvoker
from deployers.aws_lambda.package import Package, build_package, model_code
from deployers.aws_lambda.settings import LambdaSettings
from deployers.base import (
    Capacity,
    CostDrivers,
    Deployer,
    Description,
    Endpoint,
    Settings,
    SettingsError,
    Undo,
    Usage,
)
from deployers.standins import FunctionConfig, LocalLambda
from deployers.standins.lambda_shape import check_environments_fit, mem_available_mb


def _qualified(version: str | None) -> dict[str, str]:
    return {"Qualifier": version} if version else {}


def _hosted() -> LocalLambda | None:
    return standins.current().running_lambda()


def _hosting(name: str) -> LocalLambda | None:
    """The stand-in hosting function ``name``, when the Lambda endpoint is on this machine."""
    hosted = _hosted()
    if not aws.endpoint_is_local("lambda") or hosted is None or name not in hosted.functions():
        return None
    return hosted


class LambdaDeployer(Deployer[LambdaSettings]):
    """Deploys the model as a Lambda function; see the module docstring."""

    name: ClassVar[str] = "lambda"
    settings_cls = LambdaSettings
    gone = staticmethod(aws.absent)
    aws_service: ClassVar[str | None] = "lambda"

    def parse_settings(self, raw: Mapping[str, Any] | Settings | None) -> LambdaSettings:
        """The typed settings; in local mode ``SettingsError`` also when the environments the
        stand-in may hold at once (``provisioned_concurrency``, or ``reserved_concurrency`` when
        larger: the function's limit), each held at ``memory_mb``, do not fit this machine's
        available memory (``lambda_shape.check_environments_fit``), before anything is created."""
        s = super().parse_settings(raw)
        held = {"provisioned_concurrency": s.provisioned_concurrency,
                "reserved_concurrency": s.reserved_concurrency or 0}
        field, count = max(held.items(), key=lambda kv: kv[1])
        if count and s.is_local():
            try:
                check_environments_fit(count, s.memory_mb, mem_available_mb())
            except ValueError as exc:
                raise SettingsError(f"{field}={count}: {exc}; lower it or memory_mb") from None
        return s

    def deployment_name(self, settings: LambdaSettings, name: str | None) -> str:
        """The function name: ``name`` or ``settings.function_name`` (they must agree)."""
        if name and settings.function_name and name != settings.function_name:
            raise SettingsError(f"name={name!r} and function_name={settings.function_name!r} "
                                "differ; the deployment name is the function name: pass one")
        return settings.function_name or name or self.new_name()

    def create(self, model_uri: str, s: LambdaSettings, name: str, undo: Undo) -> Endpoint:
        """Package, create role/code/function/version/alias/concurrency; see module docstring."""
        tags = {**s.tags, **undo.owner.tags(), res.TAG_MODEL_URI: model_uri[:256],
                res.TAG_PROVISIONED: str(s.provisioned_concurrency)}
        package = self._package(model_uri, s, name, undo) if s.mode == "zip" else None
        role_arn = s.role_arn
        if role_arn is None:
            role = res.role_name(name)
            role_tags = {**s.tags, **undo.owner.tags()}
            role_arn = roles.create_owned(undo, role, lambda: res.create_role(name, role, role_tags))
            tags[res.TAG_ROLE] = role
        kwargs: dict[str, Any] = {
            "FunctionName": name, "Role": role_arn, "MemorySize": s.memory_mb,
            "Timeout": s.timeout_s, "Architectures": [s.architecture], "Tags": tags,
            "Description": upd.description(model_uri)}
        if package is None:
            kwargs.update(PackageType="Image", Code={"ImageUri": s.image_uri})
        else:
            kwargs.update(PackageType="Zip", Runtime=s.runtime, Handler=res.HANDLER,
                          Code=self._code(package, s, name, tags, undo))
        client = aws.client("lambda")
        undo.push(f"function {name}", lambda: res.delete_function(name))
        client.create_function(**kwargs)
        res.wait_active(name)
        version = client.publish_version(FunctionName=name,
                                         Description=upd.description(model_uri))["Version"]
        client.create_alias(FunctionName=name, Name=s.alias, FunctionVersion=version)
        if s.reserved_concurrency is not None:
            client.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=s.reserved_concurrency)
        if s.provisioned_concurrency:
            res.put_provisioned_concurrency(client, name, version, s.provisioned_concurrency,
                                            aws.endpoint_is_local("lambda"))
        url = None
        if s.is_local() and package is not None:
            undo.push(f"local function {name}", lambda: self._forget(name))
            url = self._host(name, package.root, s, {s.alias: version}).url
        invoke = self.invoker(name)
        if s.warm_up:
            invoke([[1]], 1)
        return Endpoint(self.name, name, model_uri, url, invoke, s)

    def _package(self, model_uri: str, s: LambdaSettings, name: str, undo: Undo) -> Package:
        work = standins.code_dir() / name
        undo.push(f"package {work}", lambda: shutil.rmtree(work, ignore_errors=True))
        with tempfile.TemporaryDirectory(prefix="niser-lambda-model-") as tmp:
            return build_package(model_code(model_uri, Path(tmp)), work, s.runtime, s.architecture)

    @staticmethod
    def _code(package: Package, s: LambdaSettings, name: str, tags: dict[str, str],
              undo: Undo) -> dict[str, Any]:
        """The ``Code`` of CreateFunction: the zip itself, or its copy in S3 when over 50 MB."""
        data = package.zip_path.read_bytes()
        if len(data) <= res.MAX_DIRECT_ZIP_BYTES:
            return {"ZipFile": data}
        bucket = s.s3_bucket or f"{name[:50]}-code"
        key = f"niser-mlops/{name}/{hashlib.sha256(data).hexdigest()[:16]}.zip"
        undo.push(f"s3://{bucket}/{key}", lambda: res.delete_code(bucket, key,
                                                                 s.s3_bucket is None))
        res.upload_code(bucket, key, data, create_bucket=s.s3_bucket is None)
        tags.update({res.TAG_BUCKET: bucket, res.TAG_KEY: key,
                     res.TAG_BUCKET_CREATED: str(s.s3_bucket is None).lower()})
        return {"S3Bucket": bucket, "S3Key": key}

    @staticmethod
    def _host(name: str, root: Path, s: LambdaSettings, aliases: dict[str, str]) -> LocalLambda:
        service = standins.current().aws_lambda()
        service.add_function(FunctionConfig(
            name=name, code_dir=root, memory_mb=s.memory_mb, timeout_s=float(s.timeout_s),
            reserved_concurrency=s.reserved_concurrency, runtime=s.runtime, aliases=aliases,
            provisioned_concurrency=s.provisioned_concurrency))
        return service

    @staticmethod
    def _forget(name: str) -> None:
        service = _hosted()
        if service is not None:
            service.remove_function(name)

    def invoker(self, name: str) -> LambdaInvoker:
        """Calls ``name``'s alias; hosts its package on the stand-in first when local (see the
        module docstring)."""
        tags = res.function_tags(name)  # KeyError when absent
        client = aws.client("lambda")
        aliases = client.list_aliases(FunctionName=name)["Aliases"]
        alias = aliases[0]["Name"] if aliases else None
        version = aliases[0]["FunctionVersion"] if aliases else None
        cfg = client.get_function_configuration(FunctionName=name, **_qualified(version))
        hosted = _hosted()
        url = None
        if hosted is not None and name in hosted.functions():
            url = hosted.url
        elif cfg.get("PackageType", "Zip") == "Zip" and aws.endpoint_is_local("lambda"):
            root = upd.package_root(name, version, str(cfg.get("Runtime")),
                                    (cfg.get("Architectures") or ["x86_64"])[0])
            if not root.is_dir():
                raise KeyError(f"the package of {name!r} is not at {root}; redeploy it")
            conc = client.get_function_concurrency(FunctionName=name)
            s = LambdaSettings.model_validate({
                "memory_mb": cfg["MemorySize"], "timeout_s": cfg["Timeout"],
                "runtime": cfg.get("Runtime", "python3.11"),
                "reserved_concurrency": conc.get("ReservedConcurrentExecutions"),
                "provisioned_concurrency": int(tags.get(res.TAG_PROVISIONED, 0))})
            url = self._host(name, root, s, {a["Name"]: a["FunctionVersion"]
                                             for a in aliases}).url
        return LambdaInvoker(name, alias, url, read_timeout_s=cfg["Timeout"] + 15)

    def update(self, name: str, model_uri: str,
               settings: Mapping[str, Any] | Settings | None = None,
               timeout_s: float = 900.0) -> Endpoint:
        """Serve ``model_uri`` from ``name`` without an outage: a new version beside the serving
        one, ready (provisioned concurrency included) before one switch of the alias, then the
        old version removed (``deployers.aws_lambda.update``). ``settings``: the keys to change
        (``None``: keep them all), refused with ``SettingsError`` before anything changes. A
        failure before the switch deletes what the update created and raises
        ``DeploymentFailed``; the old version keeps serving. ``KeyError`` if absent."""
        s = upd.update(name, model_uri, settings, timeout_s)
        invoke = self.invoker(name)
        if s.warm_up:
            invoke([[1]], 1)
        hosted = _hosting(name)
        return Endpoint(self.name, name, model_uri, hosted.url if hosted else None, invoke, s)

    def describe(self, name: str) -> Description:
        """Memory, architecture, concurrency and state of the version ``name``'s alias serves
        (``version``, ``alias``, ``model_uri`` in the details); ``KeyError`` if absent."""
        tags = res.function_tags(name)
        client = aws.client("lambda")
        aliases = client.list_aliases(FunctionName=name)["Aliases"]
        version = aliases[0]["FunctionVersion"] if aliases else None
        cfg = client.get_function_configuration(FunctionName=name, **_qualified(version))
        reserved = client.get_function_concurrency(FunctionName=name).get(
            "ReservedConcurrentExecutions")
        arch = (cfg.get("Architectures") or ["x86_64"])[0]
        cost = CostDrivers(kind="lambda", memory_mb=cfg["MemorySize"], architecture=arch,
                           provisioned_concurrency=int(tags.get(res.TAG_PROVISIONED, 0)),
                           max_concurrency=reserved)
        details = {"runtime": cfg.get("Runtime", "image"), "timeout_s": cfg["Timeout"],
                   "package_type": cfg.get("PackageType", "Zip"), "code_bytes": cfg["CodeSize"],
                   "model_uri": tags.get(res.TAG_MODEL_URI, ""), "version": version,
                   "alias": aliases[0]["Name"] if aliases else None,
                   "local_runtime": bool((hosted := _hosted()) and name in hosted.functions())}
        if hosted is not None and details["local_runtime"]:
            shape = hosted.shape(name)
            details.update(shaping=hosted.shaping,
                           cpu_share=None if shape is None else round(shape.cpus or 0.0, 3))
        return Description(self.name, name, cfg.get("State", "Active"), cost, details)

    def usage(self, name: str) -> Usage | None:
        """CPU the stand-in's environments of ``name`` used so far (``LocalLambda.usage``);
        ``None`` against a real AWS endpoint, or when the stand-in does not host it or runs
        unshaped."""
        hosted = _hosting(name)
        with contextlib.suppress(KeyError):  # removed meanwhile: not hosted
            return hosted.usage(name) if hosted is not None else None
        return None

    def capacity(self, name: str) -> Capacity | None:
        """How many environments of ``name``'s memory size this machine runs at once at their
        full CPU share (``LocalLambda.capacity``); ``None`` against a real AWS endpoint, or
        when the stand-in does not host it or runs unshaped."""
        hosted = _hosting(name)
        with contextlib.suppress(KeyError):
            return hosted.capacity(name) if hosted is not None else None
        return None

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
            roles.delete_role(tags[res.TAG_ROLE])
        shutil.rmtree(standins.code_dir() / name, ignore_errors=True)
