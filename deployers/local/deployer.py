"""The paper's on-premise server: ``mlflow models serve --env-manager local`` on this machine.

One deployment is ``instances`` scoring servers, each ``mlflow models serve -m <model_uri>
--env-manager local -h 127.0.0.1 -p <free port> -w <workers>`` with ``torch_threads`` intra-op
threads per worker (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``: the local analogue of the paper's
4/8/16 cores). With ``cpus`` set, each instance's server runs in a cgroup of its own with that
CPU quota on ceil(cpus) cores of its own (instance i on the next ones, wrapping round;
``deployers.standins.shaping``); its uvicorn workers, forked later, inherit it. Every
deployment, one instance or several (the paper's "2 instances of 4 cores"), sits behind its own
nginx front door (``deployers.local.door``: the rules of ``deployers.frontdoor``, and the load
balancer of ``deployers.balancer``); the endpoint's URL is the door's.

Promises:

- ``deploy`` returns once every server, and the front door, answers ``/ping``. A server that dies at
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
- ``update`` moves a deployment to another model (and settings) without an outage: new servers
  beside the old ones, the door switched to them by an nginx reload once they answer, then the
  old ones ended. A failed update ends what it started and leaves the old servers serving.
- ``teardown`` ends every process group of the deployment (nginx, servers, their workers, an
  update's in flight too), then removes its cgroups, files and state, and is idempotent.

``state_dir`` defaults to ``$NISER_LOCAL_STATE_DIR``, else ``$XDG_STATE_HOME/niser-mlops/local``
(``~/.local/state/niser-mlops/local``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from deployers import ownership, procs
from deployers.base import (
    CostDrivers,
    Deployer,
    DeployerError,
    DeploymentFailed,
    Description,
    Endpoint,
    Settings,
    Undo,
    Usage,
)
from deployers.http import HttpInvoker, ping, tail
from deployers.local import door
from deployers.local.servers import end_generation, server_argv, server_env, start_generation
from deployers.local.settings import LocalSettings, check_fits, sizes, with_workers
from deployers.standins import shaping

__all__ = ["LocalDeployer", "default_state_dir", "server_argv", "server_env"]

# Where local deployments are recorded (see the module docstring): the home process marks are
# scoped to, so a sweep of it finds this deployer's servers.
default_state_dir = ownership.home


class LocalDeployer(Deployer[LocalSettings]):
    """Local ``mlflow models serve`` instances behind an nginx front door."""

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
        """Start the servers and the front door and wait for ``/ping``; see the module
        docstring."""
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
        deadline = time.monotonic() + s.startup_timeout_s
        start_generation(model_uri, s, state["name"], state, workdir, undo,
                         lambda: self._save(state), server_argv)
        url = door.start(state, s, undo, lambda: self._save(state), deadline)
        state["url"] = url
        self._save(state)
        return url

    @staticmethod
    def _groups(state: dict[str, Any]) -> list[shaping.Group]:
        return [shaping.group_from_json(raw) for raw in state.get("cgroups", [])]

    @staticmethod
    def _invoker(url: str, s: LocalSettings) -> HttpInvoker:
        return HttpInvoker(url, timeout_s=s.request_timeout_s)

    # -- update ------------------------------------------------------------------------------
    def update(self, name: str, model_uri: str,
               settings: Mapping[str, Any] | Settings | None = None,
               timeout_s: float | None = None) -> Endpoint:
        """Move ``name`` to ``model_uri`` (and ``settings``; None keeps the current ones)
        without an outage: new servers start beside the old ones, the front door switches to
        them once they answer ``/ping``, then the old servers end.

        ``SettingsError`` before anything is touched; ``KeyError`` if absent. When anything
        fails before the switch is complete, what the update started is ended, the door keeps
        (or goes back to) the old servers, and ``DeploymentFailed`` says so. ``timeout_s``
        bounds the new servers' start-up (default: their ``startup_timeout_s``).
        """
        given = self.parse_settings(settings) if settings is not None else None
        state = self._load(name)
        old_s = LocalSettings.model_validate(state["settings"])
        kept = given or old_s
        s = kept if timeout_s is None else kept.model_copy(
            update={"startup_timeout_s": timeout_s})
        if not state.get("url") or not state.get("balancer"):
            raise DeployerError(f"local deployment {name!r} has no front door to switch (still "
                                "starting, or made by an older version); deploy it again")
        if state.get("incoming"):
            raise DeployerError(f"local deployment {name!r} is being updated already")
        undo = Undo(self.gone, ownership.Owner(name, state.get("run_id")))
        n = int(state.get("updates", 0)) + 1
        incoming: dict[str, Any] = {"model_uri": model_uri, "servers": [], "cgroups": []}
        state["incoming"] = incoming
        undo.push("the record of the update", lambda: self._forget_incoming(state))
        save = functools.partial(self._save, state)
        try:
            save()
            start_generation(model_uri, s, name, incoming, Path(state["workdir"]), undo, save,
                             server_argv, tag=f"-u{n}")
            undo.push("the front door's switch", lambda: door.switch(state, state["servers"],
                                                                     old_s))
            door.switch(state, incoming["servers"], s)
        except BaseException as exc:
            problems = undo.run()
            if not isinstance(exc, Exception):  # Ctrl-C: cleaned up, re-raised unchanged
                raise
            raise DeploymentFailed(
                f"updating local deployment {name!r} to {model_uri} failed: "
                f"{type(exc).__name__}: {exc}; it still serves {state['model_uri']}"
                + (f"; cleanup problems: {problems}" if problems else "")) from exc
        state["outgoing"] = {"servers": state["servers"], "cgroups": state.get("cgroups", [])}
        state.update(servers=incoming["servers"], cgroups=incoming["cgroups"],
                     shaping=incoming["shaping"], model_uri=model_uri,
                     settings=kept.model_dump(), updates=n, updated=time.time())
        del state["incoming"]
        save()
        end_generation(state["outgoing"])
        del state["outgoing"]
        save()
        url = str(state["url"])
        return Endpoint(self.name, name, model_uri, url, self._invoker(url, kept), kept)

    def _forget_incoming(self, state: dict[str, Any]) -> None:
        state.pop("incoming", None)
        if self._path(state["name"]).exists():
            self._save(state)

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
        if front:  # the front door; balancer_* name it as before
            details.update(door_port=front["port"], door_pid=front["process"]["pid"],
                           balancer_port=front["port"], balancer_pid=front["process"]["pid"],
                           balancer_policy=front["policy"],
                           balancer_access_log=front["access_log"])
        if state.get("updated"):
            details["updated"] = state["updated"]
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
        """Stop every process of ``name`` (front door first, then every server, an update's
        too), remove its cgroups and files; idempotent."""
        try:
            state = self._load(name)
        except KeyError:
            return
        if state.get("balancer"):
            procs.end(procs.ProcessRecord.from_json(state["balancer"]["process"]))
        for generation in (state, state.get("incoming") or {}, state.get("outgoing") or {}):
            end_generation(generation)
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
