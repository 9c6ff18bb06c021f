"""The HPO study's storage and trial queue, shared by every process that runs its trials.

A run of ``hpo`` *enqueues* its ``n_trials`` trials (state WAITING, user attribute
``hpo.run_id`` = the parent MLflow run) and every process running trials (the flow itself, or
one shard flow run per worker) *claims* them one at a time: a claim is the storage's atomic
WAITING -> RUNNING, the step Optuna's own ``Study.ask`` uses to pop a queued trial, so a trial
runs once and the run has exactly ``n_trials`` trials however many shards run and whichever die.
The sampler still picks each claimed trial's parameters (the queued trials fix none).

Storage: a URL (``sqlite:///...``, ``postgresql://...``) opens an ``RDBStorage`` with Optuna's
heartbeat: the process running a trial records a heartbeat every ``heartbeat_s``; a RUNNING
trial without one for ``grace_s`` (its process was killed, its machine died) is failed by
``optuna.storages.fail_stale_trials``, which every shard calls before each claim and the parent
calls while it waits, and the callback ends that trial's nested MLflow run FAILED. Otherwise a
journal file (``JournalStorage``), which has no heartbeat in Optuna 5 (it is not a
``BaseHeartbeat``): it serves in-process runs; a sharded run needs a URL (``hpo`` defaults it to
SQLite beside the journal).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

RUN_ATTR = "hpo.run_id"
"""The trial user attribute naming the parent MLflow run whose queue the trial belongs to."""
MLFLOW_RUN_ATTR = "mlflow_run_id"
"""The trial user attribute naming its nested MLflow run (set as soon as that run exists)."""
TRIAL_NUMBER_TAG = "optuna.trial_number"
"""The nested MLflow run's tag holding its trial's number (with ``mlflow.parentRunId``, what
finds the run of a trial killed before ``MLFLOW_RUN_ATTR`` was set)."""
SCHEMES = ("sqlite", "postgresql", "mysql")


def check_storage_url(url: str) -> str:
    """``url`` when it is a database URL Optuna can use without a password in it, else
    ``ValueError`` naming ``storage`` (a password would be stored as a Prefect parameter and
    shown in the UI: give it through the driver's environment, ``PGPASSWORD`` or ``~/.pgpass``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"storage: not a database URL: {url!r}; use e.g. "
                         "sqlite:////abs/path/optuna.db or postgresql://user@host/db") from None
    if parsed.get_backend_name() not in SCHEMES:
        raise ValueError(f"storage: unsupported scheme {parsed.get_backend_name()!r}; "
                         f"use one of {', '.join(SCHEMES)}")
    if parsed.password:
        raise ValueError("storage: the URL carries a password, which would be stored and shown "
                         "with the flow run's parameters; drop it from the URL and set "
                         "PGPASSWORD (or ~/.pgpass) where the flow and the workers run")
    return url


def open_storage(url: str | None, journal: str | Path, heartbeat_s: int = 10,
                 grace_s: int = 60) -> BaseStorage:
    """An ``RDBStorage`` with heartbeat for ``url``, else the journal file ``journal``."""
    if url is None:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    check_storage_url(url)
    engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                          grace_period=grace_s, heartbeat_stale_trial_callback=end_stale_run)


def open_study(name: str, storage: BaseStorage, seed: int) -> optuna.Study:
    """The study ``name`` (created when absent), maximizing, TPE seeded with ``seed``."""
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=seed))


def trial_run_id(client: MlflowClient, trial: FrozenTrial) -> str | None:
    """The id of ``trial``'s nested MLflow run: its ``MLFLOW_RUN_ATTR``, else (its process died
    between creating the run and recording it) the run under the parent ``RUN_ATTR`` tagged
    with its number; None when no such run was created."""
    if run_id := trial.user_attrs.get(MLFLOW_RUN_ATTR):
        return str(run_id)
    parent = trial.user_attrs.get(RUN_ATTR)
    if not parent:
        return None
    experiment = client.get_run(str(parent)).info.experiment_id
    runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}' and "
                                            f"tags.`{TRIAL_NUMBER_TAG}` = '{trial.number}'")
    return runs[0].info.run_id if runs else None


def end_stale_run(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's stale-trial callback: end the trial's nested MLflow run FAILED, saying why."""
    client = MlflowClient()
    run_id = trial_run_id(client, trial)
    if run_id is None:  # its process died before the run existed
        return
    client.set_tag(run_id, "hpo.failure", "no heartbeat: the process running this trial "
                                          "stopped (worker killed or its machine lost)")
    client.set_terminated(run_id, "FAILED")


def enqueue(study: optuna.Study, n: int, run_id: str) -> None:
    """Queue ``n`` trials for the parent run ``run_id``."""
    for _ in range(n):
        study.enqueue_trial({}, user_attrs={RUN_ATTR: run_id})


def run_trials_of(study: optuna.Study, run_id: str) -> list[FrozenTrial]:
    """The trials queued for ``run_id``, in trial-number order."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(RUN_ATTR) == run_id]


def fail_stale(study: optuna.Study) -> None:
    """Fail the study's stale trials (a no-op without heartbeat)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def claim(study: optuna.Study, storage: BaseStorage, run_id: str) -> optuna.Trial | None:
    """Take one WAITING trial of ``run_id`` (atomically), or None when none is left."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if frozen.user_attrs.get(RUN_ATTR) != run_id:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


@contextmanager
def heartbeat(storage: BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``heartbeat_s`` while the block runs."""
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        yield
        return
    interval = float(storage.get_heartbeat_interval() or 1)
    stop = threading.Event()

    def beat() -> None:
        try:
            while True:
                storage.record_heartbeat(trial_id)
                if stop.wait(interval):
                    return
        finally:
            storage.remove_session()  # this thread's connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_queue(study: optuna.Study, storage: BaseStorage, run_id: str,
              objective: Callable[[optuna.Trial], float]) -> list[int]:
    """Claim and run trials of ``run_id`` until its queue is empty; the trial numbers run here.

    A trial whose objective raises is told FAIL and the error propagates."""
    study_id = storage.get_study_id_from_name(study.study_name)
    done: list[int] = []
    while True:
        fail_stale(study)
        trial = claim(study, storage, run_id)
        if trial is None:
            return done
        with heartbeat(storage, storage.get_trial_id_from_study_id_trial_number(
                study_id, trial.number)):
            try:
                value = objective(trial)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)
        done.append(trial.number)


def wait_finished(study: optuna.Study, run_id: str, deadline: float,
                  shards_alive: Callable[[], bool], poll_s: float = 1.0,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> list[FrozenTrial]:
    """Wait until every trial of ``run_id`` is finished, failing stale ones meanwhile.

    ``RuntimeError`` when ``shards_alive()`` says no shard can run what is left, or at
    ``deadline`` (on ``clock``)."""
    while True:
        fail_stale(study)
        trials = run_trials_of(study, run_id)
        left = [t.number for t in trials if not t.state.is_finished()]
        if not left:
            return trials
        if not shards_alive():
            raise RuntimeError(f"every shard has ended but trials {left} are not finished")
        if clock() > deadline:
            raise RuntimeError(f"trials {left} not finished by the deadline")
        sleep(poll_s)
