"""Update a Lambda deployment to another model without an outage (``LambdaDeployer.update``).

The alias the invoker calls is the only switch. In order:

1. Settings: a mapping changes only the keys it names, a ``LambdaSettings`` only the fields
   it was given (``model_fields_set``); the others stay as the serving version has them (its
   configuration, the function's tags and concurrency). Each key is checked before any AWS
   call, the whole once the current ones are read, before anything is changed
   (``SettingsError`` naming the field). ``mode``, ``alias`` and ``function_name`` cannot
   change in an update.
2. The new package is built beside the serving one (``code_dir()/<name>/v<version>``); its code
   goes to ``$LATEST`` (``update_function_code``, then ``update_function_configuration`` with
   the model URI in the description; each waited for until ``LastUpdateStatus`` is
   Successful), through a new S3 object when over 50 MB, and is published as a new version.
   Reserved concurrency that grows is set now (it is function-wide), one that shrinks after.
3. Provisioned concurrency, when set, goes on the new version and is waited for (READY); on the
   local stand-in the new version's environments are started and initialised beside the
   serving ones (``LocalLambda.stage``). Until the old version is gone both are provisioned:
   a reserved concurrency must leave room for the two.
4. The switch: one ``update_alias`` call, then the stand-in serves the new version
   (``LocalLambda.commit``): requests in flight finish on the old environments, which end
   after them.
5. The old version's provisioned concurrency (and any on the alias itself, where deployments
   made before updates existed put it), the old version, its S3 object and its package are
   removed; the tags record the model URI now served.

A failure or a Ctrl-C before the switch removes what the update created (the new version, its
provisioned concurrency and environments, the new S3 object and package, a grown reserved
concurrency) and leaves the old version serving behind the alias: ``DeploymentFailed`` says
so; Ctrl-C is re-raised unchanged. ``$LATEST``, which nothing here serves or reads, keeps the
new code. Problems removing the old version after a switch are logged, not raised, and a Ctrl-C
then stops the removal: the new version serves either way, and ``teardown`` removes every
version. Updating to the same model with the same settings publishes nothing new (Lambda
answers with the serving version): only the tags and the reserved concurrency are applied.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployers import aws, standins
from deployers.aws_lambda import resources as res
from deployers.aws_lambda.package import Package, build_package, model_code
from deployers.aws_lambda.settings import LambdaSettings, check_fields
from deployers.base import DeployerError, DeploymentFailed, Settings, SettingsError, Undo
from deployers.standins import FunctionConfig
from deployers.standins.lambda_service import LocalLambda, Staged

log = logging.getLogger(__name__)
_FIXED = ("mode", "alias")  # the fields an update keeps


def description(model_uri: str) -> str:
    """The function (and version) description that names the model it serves."""
    return f"NISER recommender {model_uri} (niser-mlops)"[:256]


def version_dir(name: str, version: str) -> Path:
    """Where the package of published version ``version`` of ``name`` is kept."""
    return standins.code_dir() / name / f"v{version}"


def package_root(name: str, version: str | None, runtime: str, architecture: str) -> Path:
    """The unzipped package of ``version`` (as an update lays it out), else the deploy's."""
    leaf = f"package-{runtime}-{architecture}"
    if version is not None and (version_dir(name, version) / leaf).is_dir():
        return version_dir(name, version) / leaf
    return standins.code_dir() / name / leaf


@dataclass(frozen=True)
class Serving:
    """What serves now: the alias, its version, that version's configuration and the tags."""

    alias: str
    version: str
    config: dict[str, Any]
    tags: dict[str, str]
    reserved: int | None
    image_uri: str | None

    def settings(self) -> dict[str, Any]:
        """The settings that describe the serving version (the raw mapping)."""
        cfg, tags = self.config, self.tags
        bucket = tags.get(res.TAG_BUCKET) if tags.get(res.TAG_BUCKET_CREATED) != "true" else None
        raw: dict[str, Any] = {
            "mode": "image" if cfg.get("PackageType") == "Image" else "zip",
            "image_uri": self.image_uri, "memory_mb": cfg["MemorySize"],
            "architecture": (cfg.get("Architectures") or ["x86_64"])[0],
            "timeout_s": cfg["Timeout"], "reserved_concurrency": self.reserved,
            "provisioned_concurrency": int(tags.get(res.TAG_PROVISIONED, 0)),
            "role_arn": None if res.TAG_ROLE in tags else cfg.get("Role"),
            "alias": self.alias, "s3_bucket": bucket,
            "tags": {k: v for k, v in tags.items() if not k.startswith("niser-mlops:")}}
        if cfg.get("Runtime"):
            raw["runtime"] = cfg["Runtime"]
        return raw


def serving(name: str) -> Serving:
    """What serves ``name`` now; ``KeyError`` if absent, ``DeployerError`` if not made here."""
    tags = res.function_tags(name)
    if tags.get(res.TAG_DEPLOYMENT) != name:
        raise DeployerError(f"function {name!r} was not deployed by niser-mlops (no "
                            f"{res.TAG_DEPLOYMENT} tag); update it with the AWS console/CLI")
    client = aws.client("lambda")
    aliases = client.list_aliases(FunctionName=name)["Aliases"]
    if not aliases:
        raise DeployerError(f"function {name!r} has no alias to switch; redeploy it")
    alias = aliases[0]
    got = client.get_function(FunctionName=name, Qualifier=alias["FunctionVersion"])
    reserved = client.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions")
    return Serving(alias["Name"], alias["FunctionVersion"], got["Configuration"], tags,
                   reserved, got.get("Code", {}).get("ImageUri"))


def new_settings(name: str, now: Serving,
                 settings: Mapping[str, Any] | Settings | None) -> LambdaSettings:
    """``settings`` over the serving ones, validated whole (``SettingsError``)."""
    current = LambdaSettings.parse(now.settings())
    changes = settings.model_dump(include=settings.model_fields_set) \
        if isinstance(settings, Settings) else dict(settings or {})
    s = LambdaSettings.parse({**now.settings(), **changes})
    for key in _FIXED:
        if getattr(s, key) != getattr(current, key):
            raise SettingsError(f"{key}={getattr(s, key)!r}: an update keeps {key}="
                                f"{getattr(current, key)!r}; deploy anew to change it")
    if s.function_name not in (None, name):
        raise SettingsError(f"function_name={s.function_name!r}: this update is of {name!r}")
    return s


def update(name: str, model_uri: str, settings: Mapping[str, Any] | Settings | None,
           timeout_s: float) -> LambdaSettings:
    """Move ``name`` to ``model_uri`` (see the module docstring); returns the settings it
    serves with now."""
    if settings is not None and not isinstance(settings, Settings):
        check_fields(settings)  # before any call
    now = serving(name)
    s = new_settings(name, now, settings)
    local = aws.endpoint_is_local("lambda")
    hosted = standins.current().running_lambda()
    host = s.mode == "zip" and (s.is_local() or (hosted is not None
                                                 and name in hosted.functions()))
    deadline = time.monotonic() + timeout_s
    undo = Undo(aws.absent)
    step = _Step(name, model_uri, s, now, undo, deadline)
    at_switch = False
    try:
        step.publish()
        step.provision(local, host)
        at_switch = True
        aws.client("lambda").update_alias(FunctionName=name, Name=s.alias,
                                          FunctionVersion=step.version)
    except BaseException as exc:
        if at_switch and _alias_version(name, s.alias) == step.version:
            step.commit(0.0)  # switched after all: the stand-in follows
            if not isinstance(exc, Exception):
                raise
            raise DeploymentFailed(f"updating {name!r} to {model_uri}: alias {s.alias} points "
                                   f"at version {step.version} now, but {exc}; the old "
                                   f"version {now.version} was not removed") from exc
        problems = undo.run()
        if not isinstance(exc, Exception):
            raise
        raise DeploymentFailed(
            f"updating {name!r} to {model_uri} failed: {type(exc).__name__}: {exc}; version "
            f"{now.version} still serves behind alias {s.alias}, what the update created was "
            "deleted" + (f"; cleanup problems: {problems}" if problems else "")) from exc
    step.retire_old(step.commit(float(now.config["Timeout"]) + 5.0), local)
    return s


def _alias_version(name: str, alias: str) -> str | None:
    try:
        return str(aws.client("lambda").get_alias(FunctionName=name, Name=alias)[
            "FunctionVersion"])
    except Exception:  # unknown: assume the switch did not happen
        return None


class _Step:
    """The state of one update between its steps."""

    def __init__(self, name: str, model_uri: str, s: LambdaSettings, now: Serving, undo: Undo,
                 deadline: float) -> None:
        self.name, self.model_uri, self.s, self.now, self.undo = name, model_uri, s, now, undo
        self.deadline = deadline
        self.version = now.version
        self.package: Package | None = None
        self.code_tags: dict[str, str] = {}
        self.staged: Staged | None = None
        self.service: LocalLambda | None = None

    def _left(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def publish(self) -> None:
        """Build and upload the package, update ``$LATEST``, publish a version."""
        name, s, client = self.name, self.s, aws.client("lambda")
        code: dict[str, Any] = {"ImageUri": s.image_uri}
        if s.mode == "zip":
            staging = standins.code_dir() / name / f"staging-{uuid.uuid4().hex[:8]}"
            self.undo.push(f"package {staging}", lambda: shutil.rmtree(staging,
                                                                        ignore_errors=True))
            with tempfile.TemporaryDirectory(prefix="niser-lambda-model-") as tmp:
                self.package = build_package(model_code(self.model_uri, Path(tmp)), staging,
                                             s.runtime, s.architecture)
            code = self._code(self.package.zip_path.read_bytes())
            code["Architectures"] = [s.architecture]
        self._set_reserved(grow=True)
        client.update_function_code(FunctionName=name, **code)
        res.wait_active(name, self._left())
        config: dict[str, Any] = {"MemorySize": s.memory_mb, "Timeout": s.timeout_s,
                                  "Description": description(self.model_uri)}
        if s.mode == "zip":
            config.update(Runtime=s.runtime, Handler=res.HANDLER)
        if s.role_arn is not None:
            config["Role"] = s.role_arn
        client.update_function_configuration(FunctionName=name, **config)
        res.wait_active(name, self._left())
        before = res.versions(name)
        self.undo.push("the version it published", lambda: res.delete_versions(
            name, res.versions(name) - before))
        version = str(client.publish_version(FunctionName=name,
                                             Description=description(self.model_uri))["Version"])
        if version == self.now.version:  # nothing changed: the serving version is the same
            if self.package is not None:
                shutil.rmtree(self.package.zip_path.parent, ignore_errors=True)
            return
        self.version = version
        if self.package is not None:
            final = version_dir(name, version)
            shutil.rmtree(final, ignore_errors=True)
            self.undo.push(f"package {final}", lambda: shutil.rmtree(final, ignore_errors=True))
            staged = self.package.zip_path.parent
            staged.rename(final)
            self.package = Package(final / self.package.zip_path.name,
                                   final / self.package.root.name, s.runtime, s.architecture,
                                   self.package.unzipped_bytes, self.package.zipped_bytes)

    def _code(self, data: bytes) -> dict[str, Any]:
        """The code of UpdateFunctionCode: the zip, or a new S3 object when over 50 MB."""
        self.code_tags = {}
        if len(data) <= res.MAX_DIRECT_ZIP_BYTES:
            return {"ZipFile": data}
        tags, s = self.now.tags, self.s
        old_bucket = tags.get(res.TAG_BUCKET)
        if old_bucket is not None and s.s3_bucket in (None, old_bucket):
            bucket, create = old_bucket, False
            created = tags.get(res.TAG_BUCKET_CREATED) == "true"
        else:
            bucket, create = s.s3_bucket or f"{self.name[:50]}-code", s.s3_bucket is None
            created = create
        key = f"niser-mlops/{self.name}/{hashlib.sha256(data).hexdigest()[:16]}.zip"
        if (bucket, key) != (old_bucket, tags.get(res.TAG_KEY)):
            self.undo.push(f"s3://{bucket}/{key}", lambda: res.delete_code(bucket, key, create))
            res.upload_code(bucket, key, data, create_bucket=create)
        self.code_tags = {res.TAG_BUCKET: bucket, res.TAG_KEY: key,
                          res.TAG_BUCKET_CREATED: str(created).lower()}
        return {"S3Bucket": bucket, "S3Key": key}

    def _set_reserved(self, grow: bool) -> None:
        """Set reserved concurrency now when it grows (``grow``) or after the switch when it
        shrinks (``None``, the unreserved pool, counts as the most)."""
        old, new = self.now.reserved, self.s.reserved_concurrency
        if old == new or grow != (new is None or (old is not None and new > old)):
            return
        if grow:
            self.undo.push("reserved concurrency",
                           lambda: res.set_reserved_concurrency(self.name, old))
        res.set_reserved_concurrency(self.name, new)

    def provision(self, local: bool, host: bool) -> None:
        """Provisioned concurrency on the new version, and its environments on the stand-in,
        ready before the switch."""
        name, s, version = self.name, self.s, self.version
        if version == self.now.version:
            return
        if s.provisioned_concurrency:
            self.undo.push(f"provisioned concurrency of {version}",
                           lambda: res.delete_provisioned_concurrency(name, version, local))
            if res.put_provisioned_concurrency(aws.client("lambda"), name, version,
                                               s.provisioned_concurrency, local):
                res.wait_provisioned(name, version, self._left())
        if host and self.package is not None:
            self.service = standins.current().aws_lambda()
            service = self.service
            staged = service.stage(FunctionConfig(
                name=name, code_dir=self.package.root, memory_mb=s.memory_mb,
                timeout_s=float(s.timeout_s), reserved_concurrency=s.reserved_concurrency,
                runtime=s.runtime, aliases={s.alias: version},
                provisioned_concurrency=s.provisioned_concurrency))
            self.undo.push(f"local environments of {version}", lambda: service.discard(staged))
            self.staged = staged

    def commit(self, drain_s: float) -> bool:
        """The stand-in serves the new version; True once the old environments ended."""
        if self.service is None or self.staged is None:
            return True
        return self.service.commit(self.staged, drain_s)

    def retire_old(self, drained: bool, local: bool) -> None:
        """After the switch: tags, a shrunk reserved concurrency, and the old version gone
        (unless the new one is the old one: nothing had changed)."""
        name, now, problems = self.name, self.now, []
        steps = [("tags", self._retag), ("reserved concurrency",
                                         lambda: self._set_reserved(grow=False))]
        if self.version != now.version:
            steps += [(f"provisioned concurrency of {now.version}",
                       lambda: res.delete_provisioned_concurrency(name, now.version, local)),
                      (f"version {now.version}", lambda: res.delete_version(name, now.version)),
                      ("old S3 code", self._delete_old_code)]
            if int(now.tags.get(res.TAG_PROVISIONED, 0)):  # deploys once put it on the alias
                steps.append((f"provisioned concurrency of alias {now.alias}", lambda: (
                    res.delete_provisioned_concurrency(name, now.alias, local))))
        if drained and self.version != now.version:
            steps.append(("old package", self._delete_old_package))
        for what, action in steps:
            try:
                action()
            except Exception as exc:
                problems.append(f"{what}: {type(exc).__name__}: {exc}")
        if problems:
            log.warning("%s serves version %s of %s; removing the old version %s left "
                        "problems (teardown removes them): %s", name, self.version,
                        self.model_uri, now.version, "; ".join(problems))

    def _retag(self) -> None:
        client, old = aws.client("lambda"), self.now.tags
        arn = client.get_function_configuration(FunctionName=self.name)["FunctionArn"]
        arn = arn.rsplit(":", 1)[0] if arn.count(":") > 6 else arn
        tags = {**self.s.tags, **self.code_tags, res.TAG_MODEL_URI: self.model_uri[:256],
                res.TAG_PROVISIONED: str(self.s.provisioned_concurrency)}
        code = (res.TAG_BUCKET, res.TAG_KEY, res.TAG_BUCKET_CREATED)
        gone = [k for k in old if k not in tags and (not k.startswith("niser-mlops:")
                                                     or k in code)]
        client.tag_resource(Resource=arn, Tags=tags)
        if gone:
            client.untag_resource(Resource=arn, TagKeys=gone)

    def _delete_old_code(self) -> None:
        old, new = self.now.tags, self.code_tags
        if res.TAG_BUCKET not in old or (old[res.TAG_BUCKET], old[res.TAG_KEY]) == (
                new.get(res.TAG_BUCKET), new.get(res.TAG_KEY)):
            return
        res.delete_code(old[res.TAG_BUCKET], old[res.TAG_KEY],
                        old.get(res.TAG_BUCKET_CREATED) == "true"
                        and old[res.TAG_BUCKET] != new.get(res.TAG_BUCKET))

    def _delete_old_package(self) -> None:
        base = standins.code_dir() / self.name
        if version_dir(self.name, self.now.version).is_dir():
            shutil.rmtree(version_dir(self.name, self.now.version))
            return
        for leftover in [*base.glob("package-*"), *base.glob("niser-lambda-*.zip")]:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
