"""Find and delete what deployments left behind: AWS resources (or the moto server's) and local
processes, cgroups and records.

Promises:

- ``find(aws=True, local=True)`` lists every resource a deployer or stand-in created that still
  exists, as ``Leftover`` rows: SageMaker endpoints, endpoint configs and models, Lambda functions
  and their provisioned concurrency, S3 objects under ``niser-mlops/<deployment>/`` (one row per
  prefix), IAM roles, Lambda log groups of those functions (AWS: everything carrying the
  ``niser-mlops:deployment`` tag, ``deployers.ownership``); local deployments recorded under
  ``ownership.home()``, marked processes of that home (``ownership.marked_processes``) and their
  or their deployments' cgroups. Each row says what its bill is driven by (``cost``), for
  ``bench.leftover_cost``; a local row whose starting process still runs is ``in_use``.
- ``delete(rows)`` tears every deployment of the rows down through its deployer (``teardown`` is
  idempotent and also sweeps up an interrupted deploy), then deletes what is still there one by
  one; it never ends an ``in_use`` process (its run is still going) and returns one line per
  problem. Deleting is idempotent: what is already gone is not a problem.
- Nothing here reads or prints a credential; AWS is reached through ``deployers.aws`` only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployers import aws, ownership, procs, roles
from deployers.base import CostDrivers
from deployers.standins import shaping

S3_PREFIX = "niser-mlops"
LAMBDA_LOGS = "/aws/lambda/"


@dataclass(frozen=True)
class Leftover:
    """One resource that still exists: what, where (``aws``, ``moto`` or ``local``), whose."""

    kind: str
    name: str
    where: str
    deployment: str | None = None
    run_id: str | None = None
    created: dt.datetime | None = None
    cost: CostDrivers | None = None  # what it is billed on while it exists; None: nothing
    detail: str = ""
    size_bytes: int = 0  # stored bytes (S3 objects, log groups)
    in_use: bool = False  # a local process whose starter still runs
    target: str | None = None  # the deployer that tears its deployment down
    remove: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    def age_s(self, now: dt.datetime | None = None) -> float | None:
        """Seconds since it was created; ``None`` when unknown."""
        if self.created is None:
            return None
        return ((now or dt.datetime.now(dt.UTC)) - self.created).total_seconds()


def _where() -> str:
    return "moto" if aws.endpoint_is_local("sagemaker") else "aws"


def _tags_of(pairs: Iterable[dict[str, str]]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in pairs}


def _owned(tags: dict[str, str]) -> ownership.Owner | None:
    return ownership.owner_from_tags(tags)


def _row(kind: str, name: str, owner: ownership.Owner, target: str, **kw: Any) -> Leftover:
    return Leftover(kind, name, _where(), owner.deployment, owner.run_id,
                    ownership.parse_time(owner.created), target=target, **kw)


# -- AWS ------------------------------------------------------------------------------------------
def _sagemaker() -> Iterator[Leftover]:
    sm = aws.client("sagemaker")
    for page in sm.get_paginator("list_endpoints").paginate():
        for ep in page["Endpoints"]:
            owner = _owned(_tags_of(sm.list_tags(ResourceArn=ep["EndpointArn"])["Tags"]))
            if owner is None:
                continue
            name = ep["EndpointName"]
            cost, detail = _endpoint_cost(sm, name)
            yield _row("sagemaker-endpoint", name, owner, "sagemaker", cost=cost,
                       detail=f"{ep.get('EndpointStatus', '?')} {detail}".strip(),
                       remove=functools.partial(sm.delete_endpoint, EndpointName=name))
    for listing, key, kind, delete, arg in (
            ("list_endpoint_configs", "EndpointConfig", "sagemaker-endpoint-config",
             sm.delete_endpoint_config, "EndpointConfigName"),
            ("list_models", "Model", "sagemaker-model", sm.delete_model, "ModelName")):
        for page in sm.get_paginator(listing).paginate():
            for item in page[f"{key}s"]:
                owner = _owned(_tags_of(sm.list_tags(ResourceArn=item[f"{key}Arn"])["Tags"]))
                if owner is not None:
                    n = item[f"{key}Name"]
                    yield _row(kind, n, owner, "sagemaker",
                               remove=functools.partial(delete, **{arg: n}))


def _endpoint_cost(sm: Any, name: str) -> tuple[CostDrivers | None, str]:
    try:
        config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    except Exception as exc:  # the config may be gone already: the endpoint still bills
        if not aws.absent(exc):
            raise
        return None, "(configuration gone)"
    if "ServerlessConfig" in variant:
        mb = int(variant["ServerlessConfig"]["MemorySizeInMB"])
        return CostDrivers("serverless", memory_mb=mb), f"serverless {mb} MB"
    kind, count = variant["InstanceType"], int(variant["InitialInstanceCount"])
    return CostDrivers("instance", instance_type=kind, instance_count=count), f"{count} x {kind}"


def _lambda() -> Iterator[Leftover]:
    lam = aws.client("lambda")
    for page in lam.get_paginator("list_functions").paginate():
        for fn in page["Functions"]:
            owner = _owned(lam.list_tags(Resource=fn["FunctionArn"]).get("Tags") or {})
            if owner is None:
                continue
            name, mb = fn["FunctionName"], int(fn["MemorySize"])
            arch = (fn.get("Architectures") or ["x86_64"])[0]
            yield _row("lambda-function", name, owner, "lambda", detail=f"{mb} MB {arch}",
                       remove=functools.partial(lam.delete_function, FunctionName=name))
            with contextlib.suppress(Exception):  # moto may not answer this for every function
                for pc in lam.list_provisioned_concurrency_configs(FunctionName=name).get(
                        "ProvisionedConcurrencyConfigs", []):
                    n = int(pc.get("RequestedProvisionedConcurrentExecutions", 0))
                    qualifier = pc["FunctionArn"].rsplit(":", 1)[-1]
                    yield _row("lambda-provisioned-concurrency", f"{name}:{qualifier}", owner,
                               "lambda", detail=f"{n} environments of {mb} MB",
                               cost=CostDrivers("lambda", memory_mb=mb, architecture=arch,
                                                provisioned_concurrency=n),
                               remove=functools.partial(
                                   lam.delete_provisioned_concurrency_config, FunctionName=name,
                                   Qualifier=qualifier))


def _roles() -> Iterator[Leftover]:
    iam = aws.client("iam")
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            name = role["RoleName"]
            owner = _owned(roles.role_tags(name))
            if owner is not None:
                yield Leftover("iam-role", name, _where(), owner.deployment, owner.run_id,
                               ownership.parse_time(owner.created),
                               remove=functools.partial(roles.delete_role, name))


def _s3(deployments: set[str]) -> Iterator[Leftover]:
    """Objects under ``niser-mlops/<deployment>/`` in every bucket this account lists."""
    s3 = aws.client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        b = bucket["Name"]
        per: dict[str, list[dict[str, Any]]] = {}
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b,
                                                                     Prefix=f"{S3_PREFIX}/"):
                for obj in page.get("Contents", []):
                    parts = obj["Key"].split("/")
                    if len(parts) > 2:
                        per.setdefault(parts[1], []).append(obj)
        except Exception as exc:  # a bucket of another region or without list rights
            if aws.error_code(exc) in {"AccessDenied", "PermanentRedirect", "NoSuchBucket"}:
                continue
            raise
        for dep, objects in per.items():
            keys = [o["Key"] for o in objects]
            created = min(o["LastModified"] for o in objects)
            yield Leftover(
                "s3-prefix", f"s3://{b}/{S3_PREFIX}/{dep}/", _where(), dep, None, created,
                detail=f"{len(keys)} objects" + ("" if dep in deployments else ", no owner left"),
                size_bytes=sum(int(o.get("Size", 0)) for o in objects),
                target=None, remove=functools.partial(_delete_keys, b, keys))


def _delete_keys(bucket: str, keys: list[str]) -> None:
    s3 = aws.client("s3")
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


def _log_groups(functions: set[str]) -> Iterator[Leftover]:
    logs = aws.client("logs")
    try:
        pages = list(logs.get_paginator("describe_log_groups").paginate(
            logGroupNamePrefix=LAMBDA_LOGS))
    except Exception as exc:
        if aws.absent(exc):
            return
        raise
    for page in pages:
        for group in page.get("logGroups", []):
            fn = group["logGroupName"].removeprefix(LAMBDA_LOGS)
            if fn in functions or fn.startswith("niser-lambda-"):
                created = dt.datetime.fromtimestamp(group.get("creationTime", 0) / 1000, dt.UTC)
                n = group["logGroupName"]
                yield Leftover("log-group", n, _where(), fn, None, created,
                               size_bytes=int(group.get("storedBytes", 0)),
                               detail="" if fn in functions else "function gone",
                               remove=functools.partial(logs.delete_log_group, logGroupName=n))


def find_aws() -> list[Leftover]:
    """Every tagged AWS resource (module docstring) of the account or moto server in reach."""
    rows = [*_sagemaker(), *_lambda(), *_roles()]
    deployments = {r.deployment for r in rows if r.deployment}
    functions = {r.name for r in rows if r.kind == "lambda-function"}
    return [*rows, *_s3(deployments), *_log_groups(functions)]


# -- this machine -----------------------------------------------------------------------------
def _cgroups_of(pid: int) -> list[Path]:
    out = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if f"/{shaping.PARENT}/" not in path:
            continue
        for ctrl in controllers.split(",") or [""]:
            d = shaping.DEFAULT_ROOT / ctrl / path.lstrip("/") if ctrl else (
                shaping.DEFAULT_ROOT / path.lstrip("/"))
            if d.is_dir():
                out.append(d)
    return out


def _all_groups() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for parent in shaping.DEFAULT_ROOT.glob(f"*/{shaping.PARENT}"):
        for d in parent.iterdir():
            if d.is_dir():
                found.setdefault(d.name, []).append(d)
    direct = shaping.DEFAULT_ROOT / shaping.PARENT
    if direct.is_dir():
        for d in direct.iterdir():
            if d.is_dir():
                found.setdefault(d.name, []).append(d)
    return found


def _remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(d)


def _end(record: procs.ProcessRecord, dirs: list[Path], workdir: Path | None) -> None:
    procs.end(record)
    _remove_dirs(dirs)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def _local_deployments(home: Path) -> Iterator[Leftover]:
    for path in sorted(home.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = str(state.get("name", path.stem))
        servers = state.get("servers", [])
        created = dt.datetime.fromtimestamp(float(state.get("created", 0)), dt.UTC)
        s = state.get("settings", {})
        cpus = s.get("cpus")
        yield Leftover("local-deployment", name, "local", name, state.get("run_id"), created,
                       cost=CostDrivers("local", cpus=float(cpus) if cpus else None,
                                        instance_count=len(servers) or 1),
                       detail=f"{len(servers)} server(s) at {state.get('url')}", target="local")


def find_local(home: Path | None = None) -> list[Leftover]:
    """Local deployments, marked processes and their cgroups of ``home`` (module docstring)."""
    where = home or ownership.home()
    rows = list(_local_deployments(where)) if where.is_dir() else []
    recorded = {r.name for r in rows}
    groups_seen: set[Path] = set()
    for p in ownership.marked_processes(where):
        if p.deployment in recorded and p.role.startswith("local-"):
            continue  # a local deployment's own server: torn down with it
        dirs = _cgroups_of(p.pid)
        groups_seen.update(dirs)
        record = procs.ProcessRecord(p.pid, _pgid(p.pid), p.started, "", ())
        detail = f"{p.role}, {p.memory_mb:.0f} MB, " + (
            "its run is still going" if p.starter_alive else "its starter is gone") + f": {p.command}"
        rows.append(Leftover(
            "process", f"pid {p.pid}", "local", p.deployment, None,
            dt.datetime.fromtimestamp(p.started, dt.UTC), detail=detail,
            in_use=p.starter_alive,
            remove=functools.partial(_end, record, dirs, p.workdir)))
    deployments = {r.deployment for r in rows if r.deployment}
    for name, dirs in sorted(_all_groups().items()):
        if set(dirs) & groups_seen or not any(name.startswith(f"{d}-") for d in deployments):
            continue
        rows.append(Leftover("cgroup", name, "local", next(
            (d for d in deployments if name.startswith(f"{d}-")), None),
            detail=", ".join(str(d) for d in dirs), remove=functools.partial(_remove_dirs, dirs)))
    return rows


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid


def find(aws_resources: bool = True, local: bool = True, home: Path | None = None
         ) -> list[Leftover]:
    """AWS (or moto) leftovers, then this machine's (see the module docstring)."""
    return (find_aws() if aws_resources else []) + (find_local(home) if local else [])


# -- delete -----------------------------------------------------------------------------------
def delete(rows: list[Leftover], home: Path | None = None) -> list[str]:
    """Delete ``rows`` (module docstring); returns the problems, one line each."""
    from deployers.local import LocalDeployer
    from deployers.registry import get_deployer

    problems: list[str] = []
    torn: set[tuple[str, str]] = set()
    for r in rows:
        if r.target and r.deployment and (r.target, r.deployment) not in torn and not r.in_use:
            torn.add((r.target, r.deployment))
            deployer = (LocalDeployer(home) if r.target == "local"
                        else get_deployer(r.target))
            try:
                deployer.teardown(r.deployment)
            except Exception as exc:
                problems.append(f"{r.target} deployment {r.deployment}: {type(exc).__name__}:"
                                f" {exc}")
    for r in rows:
        if r.in_use:
            problems.append(f"{r.kind} {r.name}: skipped, its run is still going ({r.detail})")
            continue
        if r.remove is None:
            continue
        try:
            r.remove()
        except Exception as exc:
            if not (aws.absent(exc) or isinstance(exc, FileNotFoundError | ProcessLookupError)):
                problems.append(f"{r.kind} {r.name}: {type(exc).__name__}: {exc}")
    return problems
