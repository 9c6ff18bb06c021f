"""MLflow runs left RUNNING by a process that is gone (a flow killed with SIGKILL, a machine that
went down), found and ended by ``niser-mlops sweep``.

Promises:

- ``process_tags()`` are the tags a run gets from the process that runs it (``PROCESS_TAG``:
  ``<host>:<pid>:<start time>``); the flows put them on every run they start.
- ``find(client)`` lists, as ``Leftover`` rows of kind ``mlflow-run``, the RUNNING runs of every
  active experiment whose process tag names this host and a process that no longer runs (same
  PID and start time: a reused PID is not the run's process). Runs of other hosts, and runs
  without the tag, are never touched: this machine cannot tell whether their process lives.
- Deleting a row marks the run FAILED with the tag ``niser.failure`` saying why; nothing of the
  run (params, metrics, artifacts) is deleted.
"""

from __future__ import annotations

import datetime as dt
import functools
import socket
from typing import Any

import psutil
from mlflow import MlflowClient
from mlflow.entities import ViewType

from deployers.leftovers import Leftover

PROCESS_TAG = "niser.process"
FAILURE_TAG = "niser.failure"
_MAX_RUNS = 1000


def _me() -> psutil.Process:
    return psutil.Process()


def process_tags() -> dict[str, str]:
    """The tag naming this process: ``<host>:<pid>:<start time>``."""
    me = _me()
    return {PROCESS_TAG: f"{socket.gethostname()}:{me.pid}:{me.create_time():.2f}"}


def is_gone(value: str, host: str | None = None) -> bool:
    """True when ``value`` (a ``PROCESS_TAG``) names a process of this host that does not run
    any more; False for other hosts, malformed values and processes still running."""
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != (host or socket.gethostname()):
        return False
    try:
        pid, started = int(parts[1]), float(parts[2])
    except ValueError:
        return False
    try:
        return abs(psutil.Process(pid).create_time() - started) >= 0.02
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _fail(client: MlflowClient, run_id: str, why: str) -> None:
    client.set_tag(run_id, FAILURE_TAG, why)
    client.set_terminated(run_id, "FAILED")


def find(client: MlflowClient | None = None) -> list[Leftover]:
    """RUNNING runs whose process is gone (module docstring)."""
    client = client or MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    rows: list[Leftover] = []
    runs: Any = client.search_runs(experiments, "attributes.status = 'RUNNING'",
                                   max_results=_MAX_RUNS)
    for run in runs:
        value = run.data.tags.get(PROCESS_TAG, "")
        if not value or not is_gone(value):
            continue
        pid = value.rsplit(":", 2)[1]
        why = (f"the process that ran it (pid {pid} on this host) is gone; marked FAILED by "
               "niser-mlops sweep")
        rows.append(Leftover(
            "mlflow-run", run.info.run_name or run.info.run_id, "local", None, run.info.run_id,
            dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC),
            detail=f"RUNNING, process {pid} gone", target=None,
            remove=functools.partial(_fail, client, run.info.run_id, why)))
    return rows
