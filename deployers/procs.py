"""Background processes that outlive their starter, and ending them by process group.

Promises:

- ``spawn`` starts a command in a new session (its own process group, detached from the caller's
  terminal and signals) with stdout and stderr in a log file, and returns a ``ProcessRecord``
  (pid, process-group id, start time, log) that can be stored as JSON and used from any process.
  Every such process carries the ownership marks (``deployers.ownership``), so a sweep finds it
  even when its starter was killed.
- ``end`` stops every process of a record's group: SIGTERM, then SIGKILL after ``grace_s``. It
  never signals a process that merely reuses a recorded pid (start times must match), reaps the
  caller's own children so none lingers as a zombie, and is a no-op when all are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from deployers import ownership


def scoring_server_argv(model_uri: str, port: int, workers: int | None = None) -> list[str]:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1:``port``, run by this interpreter
    with its own environment (``--env-manager local``); ``workers`` None keeps MLflow's default."""
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return [*argv, "-w", str(workers)] if workers else argv


# The scoring server's HTTP stack as MLflow's own serving image has it (plain ``uvicorn``: the
# pure-Python h11 parser on asyncio's loop), even though this environment also holds httptools and
# uvloop (the session server's), which ``uvicorn`` would otherwise pick: a stand-in is shaped like
# its target, and a figure measured on it stays comparable. The caller's env may override both.
SCORING_SERVER_STACK = {"UVICORN_HTTP": "h11", "UVICORN_LOOP": "asyncio"}


def scoring_server_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for ``mlflow models serve``: this interpreter's bin folder first on PATH (the
    scoring server execs ``uvicorn`` from there) and ``SCORING_SERVER_STACK`` unless ``env``
    names its own."""
    out = {**SCORING_SERVER_STACK, **env}
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


# Popen handles of processes this process started, so ``end`` can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """One started process: enough to find and end it (and its group) from any process."""

    pid: int
    pgid: int
    started: float  # psutil create_time of the pid
    log: str
    argv: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_json`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProcessRecord:
        """The record written by ``as_json``."""
        return cls(int(raw["pid"]), int(raw["pgid"]), float(raw["started"]), str(raw["log"]),
                   tuple(raw["argv"]))


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None, *,
          role: str, deployment: str | None = None, workdir: Path | None = None
          ) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start ``argv`` in a new session, output appended to ``log``, marked as ``role`` of
    ``deployment`` with its temporary ``workdir`` (``ownership.mark``); see the module
    docstring."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), env=ownership.mark(env, role, deployment, workdir),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # already exited: keep a record that matches nothing alive
        started = 0.0
    return ProcessRecord(proc.pid, proc.pid, started, str(log), tuple(argv)), proc


def _same(proc: psutil.Process, started: float) -> bool:
    try:
        return abs(proc.create_time() - started) < 0.05
    except psutil.Error:
        return False


def members(record: ProcessRecord) -> list[psutil.Process]:
    """The live processes that belong to the record: its pid and group, started no earlier."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == record.pid:
                mine = _same(proc, record.started)
            else:
                mine = (os.getpgid(proc.pid) == record.pgid
                        and proc.create_time() >= record.started - 0.05)
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def alive(record: ProcessRecord) -> bool:
    """Whether the recorded pid itself is still running (not a zombie, not a reused pid)."""
    try:
        proc = psutil.Process(record.pid)
        return _same(proc, record.started) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listens_on(record: ProcessRecord, port: int) -> bool:
    """Whether one of the record's processes listens on TCP ``port`` (not some other program)."""
    for proc in members(record):
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns):
            return True
    return False


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def end(record: ProcessRecord, grace_s: float = 10.0) -> None:
    """SIGTERM the record's processes, SIGKILL what is left after ``grace_s``; idempotent."""
    procs = members(record)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    _reap(record.pid)
