"""Follow a flow run from a terminal: one line per step as the run logs it, until it ends.

``niser-mlops run train-and-benchmark/local --param epochs=5`` starts a run of a served
deployment (``flows.serve``) and prints its log lines as they reach the Prefect server: each
training epoch, each target's deployment and every load level of its sweep, then the flow's
summary. Promises:

- ``parse_params(["epochs=5", 'levels=[1, 2]'])`` reads ``key=value`` pairs as ``prefect
  deployment run --param`` does: a value that parses as JSON is that JSON, else the string.
- ``follow`` prints every log line of the run once, in time order, each with the task it came
  from (``benchmark-local-1x2 | level 4.0: ...``); a multi-line message (the summary) is printed
  as it is. Prefect's own "Finished in state Completed()" line of each task is left out.
- It returns the run once its state is final and its last lines are printed, and raises
  ``TimeoutError`` after ``timeout_s`` seconds (the run goes on on the server).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
from prefect.client.schemas.objects import FlowRun, Log

NOISE = "Finished in state Completed()"
PAGE = 200
OVERLAP = dt.timedelta(seconds=10)  # logs arrive in batches, not always in time order
SETTLE_S = 3.0  # after the final state, how long to wait for the last batch of lines


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs as parameters (module docstring); ``ValueError`` names a bad one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r} is not key=value, e.g. --param epochs=5")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def format_line(log: Log, task_name: str | None) -> str | None:
    """One printed line (or block) for ``log``; None for a line left out."""
    if task_name and log.message == NOISE:
        return None
    if "\n" in log.message:
        return "\n" + log.message
    return f"{log.timestamp:%H:%M:%S} {task_name or 'flow':<26} {log.message}"


def _new_logs(client: SyncPrefectClient, flow_run_id: UUID, since: dt.datetime | None,
              seen: set[UUID]) -> list[Log]:
    """The run's logs not in ``seen``, from a little before ``since`` on, every page."""
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    if since is not None:
        flt.timestamp = LogFilterTimestamp(after_=since - OVERLAP)
    fresh: list[Log] = []
    offset = 0
    while True:
        page = client.read_logs(flt, limit=PAGE, offset=offset)
        fresh += [lg for lg in page if lg.id not in seen]
        if len(page) < PAGE:
            return fresh
        offset += PAGE


def follow(flow_run_id: UUID, timeout_s: float, out: Callable[[str], None] = print,
           poll_s: float = 1.0) -> FlowRun:
    """Print the run's log lines until its state is final; see the module docstring."""
    deadline = time.monotonic() + timeout_s
    seen: set[UUID] = set()
    names: dict[UUID, str] = {}
    since: dt.datetime | None = None
    settle_until: float | None = None
    with get_client(sync_client=True) as client:
        while True:
            fresh = _new_logs(client, flow_run_id, since, seen)
            for lg in sorted(fresh, key=lambda x: x.timestamp):
                seen.add(lg.id)
                since = max(since or lg.timestamp, lg.timestamp)
                name = None
                if lg.task_run_id is not None:
                    if lg.task_run_id not in names:
                        names[lg.task_run_id] = client.read_task_run(lg.task_run_id).name
                    name = names[lg.task_run_id]
                line = format_line(lg, name)
                if line is not None:
                    out(line)
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                settle_until = settle_until or time.monotonic() + SETTLE_S
                if not fresh and time.monotonic() >= settle_until:
                    return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} did not finish within {timeout_s:g} s"
                                   "; it goes on: see it in the Prefect UI")
            time.sleep(poll_s)


def run_and_follow(deployment: str, parameters: dict[str, Any], timeout_s: float,
                   out: Callable[[str], None] = print) -> FlowRun:
    """Start a run of ``deployment`` (``flow-name/deployment-name``) and follow it."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=parameters, timeout=0)
    assert isinstance(run, FlowRun)  # called outside an event loop: the sync result
    out(f"flow run {run.name} ({run.id}) of {deployment}")
    return follow(run.id, timeout_s, out)
