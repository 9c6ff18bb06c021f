"""The SageMaker stand-in: real scoring servers for endpoints whose control plane is local.

``LocalSageMaker`` gives a control-plane endpoint (in moto, say) a real model server: it reads
the model archive back from S3 exactly as SageMaker would, unpacks it, starts ``mlflow models
serve`` on it with the container's environment, and routes ``/endpoints/<name>/invocations`` to
it on its data plane (``sagemaker_dataplane.DataPlane``). It belongs to the process's
``StandIns``: its servers and nginx stop with it, and only that process's invokers reach them.

Promises:

- An endpoint of ``instances`` instances gets that many scoring servers, round robin behind its
  route. Given a ``Shape`` (the deployer passes one instance's: its vCPUs as CPU quota and
  visible cores, its memory), each server runs in a cgroup of its own shaped so, joined before
  the server runs, so every uvicorn worker it forks is inside too. Without root or a writable
  cgroup tree the servers run unshaped (``shaping.backend`` warns once) and ``usage`` is
  ``None``. The quotas are ceilings: instances on one machine share its cores.
- Replacing an endpoint (blue/green) starts the new servers, each in a new group, before the old
  ones stop; the old groups' last readings stay in ``usage`` (it is cumulative for the endpoint).
- ``stop`` ends the servers, then removes their groups and files; so does a ``serve`` that
  fails, for what it started. Absent is not an error.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from deployers import aws
from deployers.base import Usage
from deployers.standins import shaping
from deployers.standins.sagemaker_dataplane import DataPlane, ScoringServer
from deployers.standins.shaping import CpuStat, Group, Shape

log = logging.getLogger(__name__)


@dataclass
class Served:
    """What serves one endpoint here: its servers (one per instance) and how they are shaped."""

    servers: list[ScoringServer]
    model_dir: Path
    shape: Shape | None  # the shape asked for each server (None: none asked)
    shaping: str  # the cgroup layout applied: "cgroup-v1", "cgroup-v2", or "none"

    @property
    def groups(self) -> list[Group]:
        """The servers' cgroups (empty when unshaped)."""
        return [s.group for s in self.servers if s.group is not None]


@dataclass
class _Ended:
    """The last readings of an endpoint's replaced groups, and the groups being replaced now."""

    stat: CpuStat | None = None
    groups: int = 0
    retiring: list[Group] = field(default_factory=list)


def _group_name(endpoint: str, instance: int) -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", endpoint.lower())
    return f"sagemaker-{slug}-{instance + 1}-{secrets.token_hex(3)}"


def _remove(servers: list[ScoringServer], model_dir: Path) -> None:
    """Remove the groups of ``servers`` (ended already) and ``model_dir``."""
    for server in servers:
        if server.group is not None:
            server.group.remove()
    shutil.rmtree(model_dir, ignore_errors=True)


def _discard(servers: list[ScoringServer], model_dir: Path) -> None:
    """End ``servers``, then remove their groups and ``model_dir``."""
    for server in servers:
        server.stop()
    _remove(servers, model_dir)


class LocalSageMaker:
    """Scoring servers for the endpoints of this process, behind one data plane."""

    def __init__(self) -> None:
        self.dataplane = DataPlane()
        self._served: dict[str, Served] = {}
        self._ended: dict[str, _Ended] = {}
        self._lock = threading.Lock()

    def url(self, name: str) -> str | None:
        """The data-plane URL serving ``name``, or None when it is not served here."""
        with self._lock:
            return self.dataplane.url if name in self._served else None

    def endpoints(self) -> list[str]:
        """Names of the endpoints served here."""
        with self._lock:
            return sorted(self._served)

    def served(self, name: str) -> Served:
        """What serves ``name``; ``KeyError`` when it is not served here."""
        with self._lock:
            return self._served[name]

    def server(self, name: str) -> ScoringServer:
        """The scoring server of ``name``'s first instance; ``KeyError`` when not served here."""
        return self.served(name).servers[0]

    def serve(self, name: str, model_name: str, variant: str, workers: int | None,
              shape: Shape | None = None, instances: int = 1) -> None:
        """Serve SageMaker model ``model_name`` as endpoint ``name`` on ``instances`` servers,
        each shaped ``shape`` where this machine can shape; replaces any earlier one."""
        container = aws.client("sagemaker").describe_model(ModelName=model_name)[
            "PrimaryContainer"]
        url = urlparse(container["ModelDataUrl"])
        backend = shaping.backend() if shape is not None else None
        # MLflow's SageMaker container runs MLFLOW_MODELS_WORKERS scoring workers (one per CPU
        # when unset); the deployer writes it into the container's environment (with the torch
        # threads per worker, OMP_NUM_THREADS), and the stand-in runs what it says.
        env = dict(container.get("Environment", {}))
        if workers is None and env.get("MLFLOW_MODELS_WORKERS", "").isdigit():
            workers = int(env["MLFLOW_MODELS_WORKERS"])
        model_dir = Path(tempfile.mkdtemp(prefix=f"niser-sm-{name}-"))
        servers: list[ScoringServer] = []
        try:
            archive = model_dir / "model.tar.gz"
            aws.client("s3").download_file(url.netloc, url.path.lstrip("/"), str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(model_dir / "model", filter="data")
            for i in range(instances):
                group = None
                if backend is not None and shape is not None:
                    spread = replace(shape, first_core=i * (shape.cores or 0))
                    group = backend.create(_group_name(name, i), spread)
                try:
                    servers.append(ScoringServer.start(
                        str(model_dir / "model"), model_dir / f"serve-{i + 1}.log",
                        workers=workers, env=env, group=group, endpoint=name))
                except BaseException:
                    if group is not None:
                        group.remove()
                    raise
        except BaseException:
            _discard(servers, model_dir)
            raise
        new = Served(servers, model_dir, shape, backend.version if backend else "none")
        with self._lock:
            old = self._served.get(name)
            self._served[name] = new
            if old is not None:
                self._ended.setdefault(name, _Ended()).retiring.extend(old.groups)
        try:
            self.dataplane.route(name, [s.port for s in servers], variant)
        except BaseException:
            self.stop(name)
            if old is not None:
                _discard(old.servers, old.model_dir)
            raise
        if old is not None:
            self._retire(name, old)

    def _retire(self, name: str, old: Served) -> None:
        """End the replaced servers of ``name``, keep their groups' last readings, remove them."""
        for server in old.servers:
            server.stop()
        with self._lock:
            ended = self._ended.get(name)
            for group in old.groups:
                if ended is not None and group in ended.retiring:
                    last = group.stat()
                    ended.stat = last if ended.stat is None else shaping.add_stats(
                        ended.stat, last)
                    ended.groups += 1
                    ended.retiring.remove(group)
        _remove(old.servers, old.model_dir)

    def usage(self, name: str) -> Usage | None:
        """CPU used by ``name``'s groups so far, replaced ones included; ``None`` when it is not
        served here or runs unshaped."""
        with self._lock:
            served = self._served.get(name)
            if served is None or served.shaping == "none":
                return None
            ended = self._ended.get(name, _Ended())
            quota = served.shape.cpus if served.shape is not None else None
            return shaping.usage(served.shaping, served.groups + ended.retiring, quota,
                                 ended.stat, ended.groups)

    def stop(self, name: str) -> None:
        """Stop serving ``name``, then remove its groups and files; absent is not an error."""
        with self._lock:
            served = self._served.pop(name, None)
            self._ended.pop(name, None)
        self.dataplane.unroute(name)
        if served is not None:
            _discard(served.servers, served.model_dir)

    def close(self) -> None:
        """Stop every server and the data plane."""
        for name in self.endpoints():
            try:
                self.stop(name)
            except shaping.ShapingError as exc:  # keep stopping the others
                log.warning("stopping SageMaker stand-in endpoint %s: %s", name, exc)
        self.dataplane.stop()
