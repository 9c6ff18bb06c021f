"""``hpo`` sharded over a real Prefect process work pool: MLflow, Prefect and two
``prefect worker start`` processes started by ``scripts/services.py --workers 2`` on 127.0.0.1;
the study on SQLite. One run of 16 trials, during which one worker (and the shard it runs) is
SIGKILLed mid-trial once both workers have finished a trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "services.py"
POOL = "test-hpo"
TINY = "synthetic:n_items=80,n_sessions=400"
N_TRIALS = 16  # enough that a shard whose process starts late on a busy machine still
# finds trials left: both workers must have finished one before the kill
pytestmark = pytest.mark.slow


def _env_file(path: Path) -> dict[str, str]:
    import shlex

    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines()
             if line.startswith("export "))
    return {k: shlex.split(v)[0] if v else "" for k, v in pairs}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The services with 2 workers on ``POOL``: their env and the workers' pids."""
    state = tmp_path_factory.mktemp("hpo-services")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env |= {"NISER_STATE_DIR": str(state), "NISER_AWS": "real", "PYTHONPATH": str(REPO),
            "PREFECT_WORKER_QUERY_SECONDS": "1"}
    started = subprocess.run([sys.executable, str(SCRIPT), "start", "--no-runner",
                              "--workers", "2", "--pool", POOL], env=env, capture_output=True,
                             text=True, timeout=400, cwd=REPO)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        services = json.loads((state / "services.json").read_text())
        workers = {int(services[f"worker-{i}"]["pid"]) for i in (1, 2)}
        yield {"env": {**env, **_env_file(state / "env.sh")}, "workers": workers,
               "state": state}
    finally:
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, capture_output=True,
                       timeout=180, cwd=REPO)


def _worker_of(pid: int, workers: set[int]) -> int | None:
    """The worker process ``pid`` (a shard's flow-run process) descends from."""
    try:
        return next((p.pid for p in psutil.Process(pid).parents() if p.pid in workers), None)
    except psutil.NoSuchProcess:
        return None


def _kill_mid_trial(client: MlflowClient, trial: Any, worker: int) -> tuple[int, str] | None:
    """SIGKILL the shard running ``trial`` and its worker if the trial is still running: the
    shard is stopped (SIGSTOP) first, so a trial seen RUNNING then cannot finish before the
    kill; (worker pid, trial run id), or None when the trial had finished (the shard resumes)."""
    group = os.getpgid(int(trial.data.tags["hpo.pid"]))  # the flow run's own process group
    os.killpg(group, signal.SIGSTOP)
    if client.get_run(trial.info.run_id).info.status != "RUNNING":
        os.killpg(group, signal.SIGCONT)
        return None
    os.killpg(group, signal.SIGKILL)
    os.killpg(worker, signal.SIGKILL)
    return worker, trial.info.run_id


@pytest.fixture(scope="module")
def killed_run(pool: dict[str, Any]) -> dict[str, Any]:
    """Run the study; kill one worker mid-trial once each worker has finished a trial."""
    env, workers = pool["env"], pool["workers"]
    log = pool["state"] / "hpo.log"
    with log.open("w") as sink:  # the child keeps its own copy of the descriptor
        parent = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "hpo", "--n-trials", str(N_TRIALS), "--epochs", "2",
             "--dataset", TINY, "--study-name", "sharded", "--work-pool", POOL, "--shards", "2",
             "--storage", f"sqlite:///{pool['state'] / 'optuna.db'}", "--heartbeat-s", "1",
             "--grace-s", "3"],
            env=env, cwd=pool["state"], stdout=sink, stderr=subprocess.STDOUT)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    worker_of: dict[str, int] = {}  # trial run id -> worker pid
    killed: tuple[int, str] | None = None  # (worker pid, trial run id)
    deadline = time.monotonic() + 300
    try:
        while killed is None and parent.poll() is None and time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("niser-hpo")
            runs = client.search_runs([experiment.experiment_id], "tags.`hpo.pid` != ''") \
                if experiment else []
            for run in runs:
                if run.info.run_id not in worker_of:
                    found = _worker_of(int(run.data.tags["hpo.pid"]), workers)
                    if found is not None:
                        worker_of[run.info.run_id] = found
            finished = {worker_of[r.info.run_id] for r in runs
                        if r.info.status == "FINISHED" and r.info.run_id in worker_of}
            running = [r for r in runs if r.info.status == "RUNNING" and r.info.run_id in worker_of]
            if finished == workers and running:
                killed = _kill_mid_trial(client, running[0], worker_of[running[0].info.run_id])
            time.sleep(0.1)
        parent.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if parent.poll() is None:
            parent.kill()
    out = log.read_text(errors="replace")
    assert killed is not None, f"no trial ran on both workers:\n{out[-3000:]}"
    assert parent.returncode == 0, out[-4000:]
    experiment = client.get_experiment_by_name("niser-hpo")
    assert experiment is not None
    (hpo_run,) = client.search_runs([experiment.experiment_id],
                                    "attributes.run_name = 'hpo-sharded'")
    return {"client": client, "hpo_run": hpo_run, "worker_of": worker_of, "workers": workers,
            "killed": killed, "output": out, "prefect_api": env["PREFECT_API_URL"],
            "trials": client.search_runs([experiment.experiment_id],
                                         f"tags.mlflow.parentRunId = '{hpo_run.info.run_id}'")}


def test_both_workers_ran_trials_and_every_trial_number_is_unique(killed_run):
    trials = killed_run["trials"]
    numbers = sorted(int(t.data.tags["optuna.trial_number"]) for t in trials)
    assert numbers == list(range(N_TRIALS))
    by_worker = {killed_run["worker_of"].get(t.info.run_id) for t in trials
                 if t.info.status == "FINISHED"}
    assert killed_run["workers"] <= by_worker
    assert len({t.data.tags["prefect.flow_run_id"] for t in trials}) == 2  # one per shard


def test_the_killed_workers_trial_failed_and_the_other_worker_finished_the_study(killed_run):
    worker, run_id = killed_run["killed"]
    status = {t.info.run_id: t.info.status for t in killed_run["trials"]}
    assert status.pop(run_id) == "FAILED"
    assert set(status.values()) == {"FINISHED"} and len(status) == N_TRIALS - 1
    killed_trial = killed_run["client"].get_run(run_id)
    assert "no heartbeat" in killed_trial.data.tags["hpo.failure"]
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie"
    parent = killed_run["hpo_run"]
    assert parent.data.metrics["trials_failed"] == 1
    assert parent.data.metrics["trials_complete"] == N_TRIALS - 1
    # the shard's flow run ends Crashed: marked by its worker when it saw the child die before
    # being killed itself, else by the parent once the trial was failed as stale
    flow_run_id = killed_trial.data.tags["prefect.flow_run_id"]
    with urllib.request.urlopen(f"{killed_run['prefect_api']}/flow_runs/{flow_run_id}",
                                timeout=30) as resp:
        assert json.load(resp)["state"]["type"] == "CRASHED", killed_run["output"][-4000:]


def test_the_best_parameters_and_model_are_on_the_parent_run(killed_run):
    parent, trials = killed_run["hpo_run"], killed_run["trials"]
    assert {f"best.{k}" for k in ("lr", "dim", "dropout", "weight_decay")} <= set(
        parent.data.params)
    best = max((t for t in trials if t.info.status == "FINISHED"),
               key=lambda t: t.data.metrics["val_recall_20"])
    assert parent.data.metrics["best_val_recall_20"] == pytest.approx(
        best.data.metrics["val_recall_20"])
    assert parent.data.params["best.dim"] == best.data.params["train.dim"]
    assert parent.data.params["work_pool"] == POOL and parent.data.params["shards"] == "2"
    versions = killed_run["client"].search_model_versions(f"run_id = '{parent.info.run_id}'")
    assert len(versions) == 1
