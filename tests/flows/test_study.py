"""The study's trial queue and storage checks (no Prefect server; SQLite in a temp dir)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from flows import study as studies


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://niser:s3cret@db.example/optuna", "carries a password"),
    ("redis://localhost/0", "unsupported scheme 'redis'"),
    ("not a url", "not a database URL"),
])
def test_a_bad_storage_url_is_refused_naming_the_option(url, says):
    with pytest.raises(ValueError, match=says) as raised:
        studies.check_storage_url(url)
    assert str(raised.value).startswith("storage: ")
    assert "s3cret" not in str(raised.value)


def _sqlite(tmp_path: Path) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = studies.open_storage(f"sqlite:///{tmp_path / 'o.db'}", "", 5, 10)
    return studies.open_study("q", storage, seed=0), storage


def test_two_claimers_take_each_queued_trial_once_and_none_of_another_run(tmp_path):
    a, storage_a = _sqlite(tmp_path)
    b, storage_b = _sqlite(tmp_path)  # a second connection, as a second process has
    studies.enqueue(a, 5, "run-1")
    studies.enqueue(a, 2, "run-2")
    claimed: list[int] = []
    while True:
        got = [studies.claim(s, st, "run-1") for s, st in ((a, storage_a), (b, storage_b))]
        if not any(got):
            break
        claimed += [t.number for t in got if t is not None]
    assert sorted(claimed) == [0, 1, 2, 3, 4]
    states = {t.number: t.state for t in a.get_trials()}
    assert [states[n] for n in (5, 6)] == [TrialState.WAITING] * 2  # run-2's are left alone


def test_run_queue_runs_the_runs_trials_with_sampled_parameters_and_fails_a_raising_one(tmp_path):
    study, storage = _sqlite(tmp_path)
    studies.enqueue(study, 3, "run")
    done = studies.run_queue(study, storage, "run", lambda t: t.suggest_float("x", 0, 1))
    assert done == [0, 1, 2] and len({t.params["x"] for t in study.trials}) == 3
    studies.enqueue(study, 1, "again")

    def boom(trial: optuna.Trial) -> float:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        studies.run_queue(study, storage, "again", boom)
    assert study.trials[-1].state == TrialState.FAIL


def test_a_stale_trial_ends_its_mlflow_run_failed_saying_why(tracking_uri):
    client = MlflowClient()
    run = client.create_run(os.environ["MLFLOW_EXPERIMENT_ID"])  # set by tracking_uri
    trial = optuna.trial.create_trial(state=TrialState.FAIL,
                                      user_attrs={studies.MLFLOW_RUN_ATTR: run.info.run_id})
    studies.end_stale_run(optuna.create_study(), trial)
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "FAILED" and "no heartbeat" in ended.data.tags["hpo.failure"]


def test_a_trial_killed_before_recording_its_run_still_ends_that_run_failed(tracking_uri):
    client = MlflowClient()
    experiment = os.environ["MLFLOW_EXPERIMENT_ID"]
    parent = client.create_run(experiment).info.run_id
    zero, two = (client.create_run(experiment, tags={
        "mlflow.parentRunId": parent, studies.TRIAL_NUMBER_TAG: str(n)}).info.run_id
        for n in (0, 2))
    study = optuna.create_study()  # trials 0 and 1, each with only its parent run recorded
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL,
                                                  user_attrs={studies.RUN_ATTR: parent}))
    studies.end_stale_run(study, study.trials[0])
    assert client.get_run(zero).info.status == "FAILED"
    assert "no heartbeat" in client.get_run(zero).data.tags["hpo.failure"]
    studies.end_stale_run(study, study.trials[1])  # killed before its run was created
    assert client.get_run(two).info.status == "RUNNING"  # another trial's run: untouched


def test_wait_finished_gives_up_when_no_shard_is_left_and_at_the_deadline(tmp_path):
    study, _ = _sqlite(tmp_path)
    studies.enqueue(study, 2, "run")
    with pytest.raises(RuntimeError, match=r"every shard has ended but trials \[0, 1\]"):
        studies.wait_finished(study, "run", deadline=1e9, shards_alive=lambda: False)
    now = iter([0.0, 5.0])
    with pytest.raises(RuntimeError, match="not finished by the deadline"):
        studies.wait_finished(study, "run", deadline=1.0, shards_alive=lambda: True,
                              clock=lambda: next(now), sleep=lambda s: None)
