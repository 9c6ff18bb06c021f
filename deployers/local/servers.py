"""The scoring servers of one local deployment: their command line and environment, and starting
one generation of them (a deployment's first, or the one an update brings in beside it).

Promises of ``start_generation``:

- Each server's cgroup (when shaped) and process are recorded in ``into`` and saved (``save``)
  as soon as they exist, and their removal and end are pushed on ``undo`` first, so a failure,
  or a kill of this process, leaves nothing that no record names.
- It returns once every server answers ``/ping`` on its own port; otherwise it raises
  ``DeployerError`` naming the instance, with the tail of its log.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

from deployers import procs
from deployers.base import DeployerError, Undo
from deployers.http import free_port, tail, wait_for_ping
from deployers.local.settings import LocalSettings, sizes
from deployers.standins import shaping

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

ArgvOf = Callable[[str, int, LocalSettings, int], list[str]]


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
    argv = (litserve_argv(model_uri, port, s) if s.server == "litserve"
            else procs.scoring_server_argv(model_uri, port, workers))
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


def litserve_argv(model_uri: str, port: int, s: LocalSettings) -> list[str]:
    """The command line of the LitServe reference server (``deployers.local.litserve_app``)."""
    return [sys.executable, "-m", "deployers.local.litserve_app", "--model-uri", model_uri,
            "--port", str(port), "--workers", str(sizes(s)[0]),
            "--max-batch", str(s.litserve_max_batch),
            "--batch-timeout-ms", f"{s.litserve_batch_timeout_ms:g}",
            "--request-timeout-s", f"{s.request_timeout_s:g}"]


def start_generation(model_uri: str, s: LocalSettings, name: str, into: dict[str, Any],
                     workdir: Path, undo: Undo, save: Callable[[], None], argv_of: ArgvOf,
                     tag: str = "") -> None:
    """Start ``s.instances`` servers of ``model_uri`` for deployment ``name``, recorded in
    ``into["servers"]``/``into["cgroups"]`` (``into["shaping"]`` says how they are shaped);
    logs ``server-<i><tag>.log`` in ``workdir``. See the module docstring."""
    env = server_env(s)
    backend = shaping.backend() if s.cpus is not None else None
    into["shaping"] = backend.version if backend is not None else "none"
    into.setdefault("servers", [])
    into.setdefault("cgroups", [])
    save()
    started = []
    for i in range(s.instances):
        group = None
        if backend is not None and s.cpus is not None:
            cores = math.ceil(s.cpus)
            group = backend.create(f"{name}-{i + 1}-{secrets.token_hex(3)}",
                                   shaping.Shape(cpus=s.cpus, cores=cores,
                                                 first_core=i * cores))
            undo.push(f"cgroup {group.name}", group.remove)
            into["cgroups"].append(group.as_json())
            save()
        port = free_port()
        record, proc = procs.spawn(argv_of(model_uri, port, s, i), env,
                                   workdir / f"server-{i}{tag}.log", cwd=workdir,
                                   role="local-server", deployment=name)
        undo.push(f"server {i + 1}", functools.partial(procs.end, record))
        if group is not None:
            join(group, record)
        into["servers"].append({"url": f"http://127.0.0.1:{port}", "port": port,
                                "process": record.as_json()})
        save()
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


def end_generation(of: dict[str, Any]) -> None:
    """End every server recorded in ``of`` (``servers``) and remove its cgroups; idempotent."""
    for entry in of.get("servers", []):
        procs.end(procs.ProcessRecord.from_json(entry["process"]))
    for raw in of.get("cgroups", []):
        shaping.group_from_json(raw).remove()


def join(group: shaping.Group, record: procs.ProcessRecord) -> None:
    """Move the server, and whatever it forked before it was moved, into ``group``."""
    try:
        group.add(record.pid)
        for member in procs.members(record):
            if member.pid != record.pid:
                group.add(member.pid)
    except shaping.ShapingError:
        if procs.alive(record):  # one that died at start is reported by its /ping wait
            raise
