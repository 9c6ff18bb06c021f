"""The paper's on-premise server: ``mlflow models serve --env-manager local`` on this machine.

One deployment is ``instances`` scoring servers, each ``mlflow models serve -m <model_uri>
--env-manager local -h 127.0.0.1 -p <free port> -w <workers>`` with ``torch_threads`` intra-op
threads per worker (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``: the local analogue of the paper's
4/8/16 cores). With ``cpus`` set, each instance's server runs in a cgroup of its own with that
CPU quota on ceil(cpus) cores of its own (instance i on the next ones, wrapping round;
``deployers.standins.shaping``); its uvicorn workers, forked later, inherit it. Several
instances sit behind one nginx load balancer (the paper's "2 instances of 4 cores"); the
endpoint's URL is the balancer's, or the single server's.

Promises:

- ``deploy`` returns once every server, and the balancer, answers ``/ping``. A server that dies at
  start-up, or does not answer within ``startup_timeout_s``, raises ``DeploymentFailed`` with the
  tail of its log, after everything this call started has been stopped.
- Every process is started in its own session and recorded (pid, group, start time) in a JSON
  state file under ``state_dir`` as soon as it exists, so deployments outlive the process that
  made them (``mlflow deployments create`` exits at once), and ``list``/``describe``/``teardown``/
  ``invoker`` work from any process that uses the same ``state_dir``.
- ``instances`` x ``cpus``, or ``instances`` x ``workers`` x ``torch_threads``, above the cores
  this process may use is refused (``SettingsError``) before anything starts: a shape is never
  run smaller than asked, and the servers' threads do not share cores. Without root or a
  writable cgroup tree the deployment warns once and runs unshaped; ``describe`` says which
  (``shaping``: ``none``, ``cgroup-v1`` or ``cgroup-v2``, and the cgroups' names), and
  ``usage`` sums the CPU its cgroups used (``None`` when unshaped).
- ``teardown`` ends every process group of the deployment (servers, their workers, nginx), then
  removes its cgroups, files and state, and is idempotent.

``state_dir`` defaults to ``$NISER_LOCAL_STATE_DIR``, else ``$XDG_STATE_HOME/niser-mlops/local``
(``~/.local/state/niser-mlops/local``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import mlflow

from deployers import balancer as lb
from deployers import ownership, procs
from deployers.base import (
    CostDrivers,
    Deployer,
    DeployerError,
    Description,
    Endpoint,
    Settings,
    Undo,
    Usage,
)
from deployers.http import HttpInvoker, free_port, ping, tail, wait_for_ping
from deployers.local.settings import LocalSettings, check_fits, sizes, with_workers
from deployers.standins import shaping

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# Where local deployments are recorded (see the module docstring): the home process marks are
# scoped to, so a sweep of it finds this deployer's servers.
default_state_dir = ownership.home


def server_env(settings: LocalSettings) -> dict[str, str]:
    """The environment of one scoring server: venv on PATH, thread limits, tracking URI."""
    env = procs.scoring_server_env(os.environ)
    threads = sizes(settings)[1]
    for var in _THREAD_VARS:
        env[var] = str(threads)
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings.environment)
    return env


def server_argv(model_uri: str, port: int, s: LocalSettings, instance: int) -> list[str]:
    """The command line of instance ``instance`` (``taskset``-prefixed when pinning cores)."""
    workers, threads = sizes(s)
    argv = procs.scoring_server_argv(model_uri, port, workers)
    if s.cpu_affinity:
        per = workers * threads
        cores = sorted(os.sched_getaffinity(0))
        if per * s.instances > len(cores):
            raise DeployerError(
                f"cpu_affinity needs instances*workers*torch_threads = {per * s.instances} cores,"
                f" this process may use {len(cores)}; lower them or set cpu_affinity=false"
            )
        block = cores[instance * per:(instance + 1) * per]
        argv = ["taskset", "-c", ",".join(map(str, block)), *argv]
    return argv


class LocalDeployer(Deployer[LocalSettings]):
    """Local ``mlflow models serve`` instances, behind nginx when there are several."""

    name: ClassVar[str] = "local"
    settings_cls = LocalSettings

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self._state_dir = Path(state_dir) if state_dir is not None else None

    @property
    def state_dir(self) -> Path:
        """Where deployments are recorded: the one given, else ``default_state_dir()`` now."""
        return self._state_dir if self._state_dir is not None else default_state_dir()

    # -- state -------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _save(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self._path(state["name"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    def _load(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise KeyError(
                f"no local deployment named {name!r} in {self.state_dir}; known: {self.list()}"
            ) from None

    # -- deploy ------------------------------------------------------------------------------
    def parse_settings(self, raw: Mapping[str, Any] | Settings | None) -> LocalSettings:
        """The typed settings; ``SettingsError`` also when the shape does not fit this machine's
        cores (``check_fits``)."""
        cores = shaping.machine_cores()
        return check_fits(with_workers(super().parse_settings(raw), cores), cores)

    def create(self, model_uri: str, s: LocalSettings, name: str, undo: Undo) -> Endpoint:
        """Start the servers (and balancer) and wait for ``/ping``; see the module docstring."""
        if self._path(name).exists():
            raise DeployerError(
                f"a local deployment named {name!r} already exists; tear it down or pick another")
        workdir = Path(tempfile.mkdtemp(prefix=f"niser-local-{name}-"))
        state: dict[str, Any] = {
            "name": name, "model_uri": model_uri, "settings": s.model_dump(),
            "workdir": str(workdir), "created": time.time(), "servers": [], "balancer": None,
            "url": None, "shaping": "none", "cgroups": [], "run_id": undo.owner.run_id,
        }
        undo.push(f"local deployment {name}", lambda: self.teardown(name))
        self._save(state)
        url = self._start(model_uri, s, state, workdir, undo)
        return Endpoint(self.name, name, model_uri, url, self._invoker(url, s), s)

    def _start(self, model_uri: str, s: LocalSettings, state: dict[str, Any], workdir: Path,
               undo: Undo) -> str:
        env = server_env(s)
        backend = shaping.backend() if s.cpus is not None else None
        state["shaping"] = backend.version if backend is not None else "none"
        started = []
        for i in range(s.instances):
            group = None
            if backend is not None and s.cpus is not None:
                cores = math.ceil(s.cpus)
                group = backend.create(f"{state['name']}-{i + 1}-{secrets.token_hex(3)}",
                                       shaping.Shape(cpus=s.cpus, cores=cores,
                                                     first_core=i * cores))
                undo.push(f"cgroup {group.name}", group.remove)
                state["cgroups"].append(group.as_json())
                self._save(state)
            port = free_port()
            record, proc = procs.spawn(server_argv(model_uri, port, s, i), env,
                                       workdir / f"server-{i}.log", cwd=workdir,
                                       role="local-server", deployment=state["name"])
            undo.push(f"server {i + 1}", functools.partial(procs.end, record))
            if group is not None:
                _join(group, record)
            state["servers"].append({"url": f"http://127.0.0.1:{port}", "port": port,
                                     "process": record.as_json()})
            self._save(state)
            started.append((port, proc, record))
        deadline = time.monotonic() + s.startup_timeout_s
        for i, (port, proc, record) in enumerate(started):
            try:
                wait_for_ping(f"http://127.0.0.1:{port}", max(deadline - time.monotonic(), 0.5),
                              proc, record.log)
                if not procs.listens_on(record, port):
                    raise DeployerError(
                        f"port {port} answered /ping but another program listens there (it was"
                        f" taken after it was chosen); deploy again. Log:\n{tail(record.log)}")
            except DeployerError as exc:
                raise DeployerError(f"instance {i + 1} of {s.instances}: {exc}") from None
        if s.instances == 1:
            state["url"] = f"http://127.0.0.1:{started[0][0]}"
            self._save(state)
            return str(state["url"])
        prefix = workdir / "nginx"
        prefix.mkdir()
        port = free_port()
        config = lb.write_config(prefix, port, [sv["port"] for sv in state["servers"]],
                                 s.balancer, s.request_timeout_s)
        record, proc = lb.start(config, prefix, dict(os.environ), "local-balancer",
                                state["name"])
        undo.push("balancer", lambda: procs.end(record))
        url = f"http://127.0.0.1:{port}"
        state["balancer"] = {"url": url, "port": port, "policy": s.balancer,
                             "access_log": str(prefix / "access.log"),
                             "process": record.as_json()}
        self._save(state)
        wait_for_ping(url, max(deadline - time.monotonic(), 5.0), proc, prefix / "error.log")
        if not procs.listens_on(record, port):
            raise DeployerError(f"the balancer's port {port} was taken by another program after"
                                " it was chosen; deploy again")
        state["url"] = url
        self._save(state)
        return url

    @staticmethod
    def _groups(state: dict[str, Any]) -> list[shaping.Group]:
        return [shaping.group_from_json(raw) for raw in state.get("cgroups", [])]

    @staticmethod
    def _invoker(url: str, s: LocalSettings) -> HttpInvoker:
        return HttpInvoker(url, timeout_s=s.request_timeout_s)

    # -- the rest of the interface -----------------------------------------------------------
    def invoker(self, name: str) -> HttpInvoker:
        """An HTTP invoker for deployment ``name``; ``KeyError`` if absent."""
        state = self._load(name)
        if not state.get("url"):
            raise KeyError(f"local deployment {name!r} is still starting (no URL yet)")
        settings = LocalSettings.model_validate(state["settings"])
        return self._invoker(str(state["url"]), settings)

    def describe(self, name: str) -> Description:
        """Processes, ports and URL of ``name``, and its cost drivers; ``KeyError`` if absent."""
        state = self._load(name)
        s = LocalSettings.model_validate(state["settings"])
        records = [procs.ProcessRecord.from_json(sv["process"]) for sv in state["servers"]]
        up = [procs.alive(r) for r in records]
        front = state.get("balancer")
        lb_up = procs.alive(procs.ProcessRecord.from_json(front["process"])) if front else True
        if not state.get("url"):
            status = "starting"
        elif all(up) and lb_up and ping(state["url"], timeout_s=2.0):
            status = "running"
        else:
            down = [str(i + 1) for i, ok in enumerate(up) if not ok] + ([] if lb_up else ["lb"])
            status = f"degraded (down: {', '.join(down) or 'none'}; /ping failed)"
        details: dict[str, Any] = {
            "url": state.get("url"), "model_uri": state["model_uri"],
            "workers": s.workers, "torch_threads": s.torch_threads,
            "ports": [sv["port"] for sv in state["servers"]],
            "pids": [r.pid for r in records], "logs": [r.log for r in records],
            "shaping": state.get("shaping", "none"),
        }
        if state.get("cgroups"):
            details["cgroups"] = [g.name for g in self._groups(state)]
        if front:
            details.update(balancer_port=front["port"], balancer_pid=front["process"]["pid"],
                           balancer_policy=front["policy"],
                           balancer_access_log=front["access_log"])
        return Description(
            target=self.name, name=name, status=status, details=details,
            cost=CostDrivers(kind="local", instance_count=s.instances,
                             cpus=s.cpus if s.cpus is not None
                             else float(math.prod(sizes(s)))),
        )

    def usage(self, name: str) -> Usage | None:
        """CPU used so far by the cgroups of ``name``'s instances, summed (``quota_cpus``: each
        instance's ``cpus``); ``None`` when it runs unshaped, ``KeyError`` if absent."""
        state = self._load(name)
        if state.get("shaping", "none") == "none":
            return None
        s = LocalSettings.model_validate(state["settings"])
        return shaping.usage(state["shaping"], self._groups(state), s.cpus)

    def teardown(self, name: str) -> None:
        """Stop every process of ``name`` (balancer first), remove its files; idempotent."""
        try:
            state = self._load(name)
        except KeyError:
            return
        groups = [state["balancer"]] if state.get("balancer") else []
        groups += state["servers"]
        for entry in groups:
            procs.end(procs.ProcessRecord.from_json(entry["process"]))
        for group in self._groups(state):
            group.remove()
        workdir = Path(state["workdir"])  # removed only if it is the one create made
        if workdir.parent == Path(tempfile.gettempdir()) \
                and workdir.name.startswith(f"niser-local-{name}-"):
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
        with contextlib.suppress(FileNotFoundError, KeyError):
            self._path(name).unlink()

    def list(self) -> list[str]:
        """Names of the deployments recorded under ``state_dir``."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def logs(self, name: str, lines: int = 30) -> str:
        """The last lines of every server log of ``name`` (for error messages and debugging)."""
        state = self._load(name)
        return "\n".join(f"--- {sv['process']['log']}\n{tail(sv['process']['log'], lines)}"
                         for sv in state["servers"])


def _join(group: shaping.Group, record: procs.ProcessRecord) -> None:
    """Move the server, and whatever it forked before it was moved, into ``group``."""
    try:
        group.add(record.pid)
        for member in procs.members(record):
            if member.pid != record.pid:
                group.add(member.pid)
    except shaping.ShapingError:
        if procs.alive(record):  # one that died at start is reported by its /ping wait
            raise
