"""Who created a resource, and when: the tags on AWS resources and the marks on local processes.

Promises:

- ``Owner`` is one deployment's ownership record: its name, the MLflow run it was made for
  (``None`` when deployed outside a run) and its creation time (UTC, ISO 8601). ``tags()`` are
  the AWS tags every deployer puts on everything it creates (``niser-mlops:deployment``,
  ``niser-mlops:run-id``, ``niser-mlops:created``); ``owner_from_tags`` reads them back.
- ``mark(env, role, deployment)`` adds the process marks to the environment of a background
  process a deployer or stand-in starts: its role (``local-server``, ``sagemaker-server``,
  ``balancer``...), its deployment, the state folder of the run that started it (``home()``) and
  the pid and start time of the process that started it. Marks are environment variables, so
  they survive the starter being killed with SIGKILL and are read from ``/proc`` by anyone with
  the right to signal the process (``marked_processes``). nginx overwrites its environment
  with its process title, so a balancer's marks go in a file in its prefix folder instead
  (``write_marks``; the folder is in its command line as ``-p``).
- ``home()`` is the folder local deployments and marks are scoped to: ``$NISER_LOCAL_STATE_DIR``,
  else ``$XDG_STATE_HOME/niser-mlops/local``, else ``~/.local/state/niser-mlops/local``. A sweep of
  one home never touches another's processes (tests, other checkouts).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TAG_DEPLOYMENT = "niser-mlops:deployment"
TAG_RUN_ID = "niser-mlops:run-id"
TAG_CREATED = "niser-mlops:created"

ENV_ROLE = "NISER_MLOPS_PROCESS"
ENV_DEPLOYMENT = "NISER_MLOPS_DEPLOYMENT"
ENV_HOME = "NISER_MLOPS_HOME"
ENV_STARTER = "NISER_MLOPS_STARTER"  # "<pid>:<start time>" of the process that started it
ENV_WORKDIR = "NISER_MLOPS_WORKDIR"  # a temporary folder that goes with the process


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-12-03T19:20:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time (``Z`` or an offset) as an aware datetime; ``None`` when unreadable."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Owner:
    """A deployment's ownership record (see the module docstring)."""

    deployment: str
    run_id: str | None = None
    created: str = field(default_factory=now_iso)

    def tags(self) -> dict[str, str]:
        """The ownership tags (``run-id`` only when there is one)."""
        out = {TAG_DEPLOYMENT: self.deployment, TAG_CREATED: self.created}
        if self.run_id:
            out[TAG_RUN_ID] = self.run_id
        return out


def owner_from_tags(tags: Mapping[str, str]) -> Owner | None:
    """The owner recorded in ``tags``; ``None`` when they carry no deployment tag."""
    name = tags.get(TAG_DEPLOYMENT)
    if not name:
        return None
    return Owner(name, tags.get(TAG_RUN_ID) or None, tags.get(TAG_CREATED, ""))


def home() -> Path:
    """The folder local deployments and process marks are scoped to (module docstring)."""
    if os.environ.get("NISER_LOCAL_STATE_DIR"):
        return Path(os.environ["NISER_LOCAL_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "niser-mlops" / "local"


def _me() -> str:
    me = psutil.Process()
    return f"{me.pid}:{me.create_time():.2f}"


def mark(env: Mapping[str, str], role: str, deployment: str | None = None,
         workdir: Path | None = None) -> dict[str, str]:
    """``env`` with the process marks of a background process of ``role`` (module docstring);
    ``workdir``: a temporary folder of its files, removed with it by a sweep."""
    out = {**env, ENV_ROLE: role, ENV_HOME: str(home()), ENV_STARTER: _me()}
    out.pop(ENV_WORKDIR, None)
    if workdir is not None:
        out[ENV_WORKDIR] = str(workdir)
    if deployment:
        out[ENV_DEPLOYMENT] = deployment
    else:
        out.pop(ENV_DEPLOYMENT, None)
    return out


MARKS_FILE = "niser-mlops-marks.json"


def write_marks(folder: Path, role: str, deployment: str | None = None) -> None:
    """Record the marks of a process whose command line names ``folder`` after ``-p`` (nginx)."""
    marks = mark({}, role, deployment)
    (folder / MARKS_FILE).write_text(json.dumps(marks))


def _marks(proc: psutil.Process) -> dict[str, str]:
    env = proc.environ()
    if env.get(ENV_ROLE):
        return env
    argv = " ".join(proc.cmdline()).split()  # nginx rewrites it as one "nginx: master ..." line
    if "-p" in argv[:-1] and "nginx" in proc.name():
        try:
            raw = json.loads((Path(argv[argv.index("-p") + 1]) / MARKS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return {}


@dataclass(frozen=True)
class MarkedProcess:
    """A running process that carries the marks: who it is and whether its starter still runs."""

    pid: int
    started: float  # psutil create_time
    role: str
    deployment: str | None
    starter_alive: bool
    command: str
    memory_mb: float
    workdir: Path | None = None  # a temporary niser-* folder that goes with it (see ``workdir``)


def _alive(starter: str) -> bool:
    pid, _, started = starter.partition(":")
    try:
        proc = psutil.Process(int(pid))
        return abs(proc.create_time() - float(started)) < 0.02
    except (ValueError, psutil.Error):
        return False


def _workdir(raw: str | None) -> Path | None:
    """A recorded work folder, only when it is a ``niser-*`` folder directly in the temporary
    directory: a mark never makes a sweep remove anything else."""
    if not raw:
        return None
    path = Path(raw)
    tmp = Path(tempfile.gettempdir())
    return path if path.parent == tmp and path.name.startswith("niser-") else None


def marked_processes(where: Path | None = None) -> list[MarkedProcess]:
    """Every process of home ``where`` (default ``home()``) that carries the marks, oldest
    first. Only the top process of each marked tree is listed (a server's own workers inherit
    its marks and go with it)."""
    scope = str(where or home())
    found: dict[int, tuple[psutil.Process, dict[str, str]]] = {}
    for proc in psutil.process_iter():
        try:
            env = _marks(proc)
        except psutil.Error:
            continue
        if env.get(ENV_ROLE) and env.get(ENV_HOME) == scope:
            found[proc.pid] = (proc, env)
    out = []
    for pid, (proc, env) in found.items():
        try:
            if proc.ppid() in found and found[proc.ppid()][1].get(ENV_STARTER) == env.get(
                    ENV_STARTER):
                continue  # a child of a marked process with the same starter: goes with it
            out.append(MarkedProcess(
                pid, proc.create_time(), env[ENV_ROLE], env.get(ENV_DEPLOYMENT) or None,
                _alive(env.get(ENV_STARTER, "")), " ".join(proc.cmdline())[:200],
                proc.memory_info().rss / 2**20, _workdir(env.get(ENV_WORKDIR))))
        except psutil.Error:
            continue
    return sorted(out, key=lambda p: p.started)
