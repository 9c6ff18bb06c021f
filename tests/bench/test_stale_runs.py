"""Runs left RUNNING by a dead process of this host are found and marked FAILED; runs of live
processes, other hosts or without the process tag are never touched."""

from __future__ import annotations

import socket
import subprocess

import psutil
from mlflow import MlflowClient

from bench import stale_runs
from deployers import leftovers


def _dead_process_tag() -> str:
    proc = subprocess.Popen(["true"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:{started:.2f}"


def _run(client: MlflowClient, experiment: str, **tags: str) -> str:
    return client.create_run(experiment, tags=tags).info.run_id


def test_only_running_runs_of_dead_processes_of_this_host_are_listed_and_failed(tracking_uri):
    client = MlflowClient()
    exp = client.create_experiment("stale-runs")
    dead = _dead_process_tag()
    gone = _run(client, exp, **{stale_runs.PROCESS_TAG: dead})
    alive = _run(client, exp, **stale_runs.process_tags())
    elsewhere = _run(client, exp, **{stale_runs.PROCESS_TAG: "another-host:1:1.00"})
    untagged = _run(client, exp)
    finished = _run(client, exp, **{stale_runs.PROCESS_TAG: dead})
    client.set_terminated(finished, "FINISHED")
    rows = [r for r in stale_runs.find(client) if r.run_id in
            {gone, alive, elsewhere, untagged, finished}]
    assert [(r.kind, r.run_id) for r in rows] == [("mlflow-run", gone)]
    assert leftovers.delete(rows) == []
    run = client.get_run(gone)
    assert run.info.status == "FAILED"
    assert run.data.tags[stale_runs.FAILURE_TAG].startswith("the process that ran it (pid ")
    for other in (alive, elsewhere, untagged):
        assert client.get_run(other).info.status == "RUNNING"
        client.set_terminated(other, "FINISHED")


def test_a_reused_pid_is_not_the_runs_process():
    me = psutil.Process()
    assert stale_runs.is_gone(f"{socket.gethostname()}:{me.pid}:{me.create_time() - 60:.2f}")
    assert not stale_runs.is_gone(stale_runs.process_tags()[stale_runs.PROCESS_TAG])
    assert not stale_runs.is_gone("not a tag")
