"""``niser-mlops`` command line: the MLproject entry points and everyday commands.

    niser-mlops train --epochs 1                 # train, log, register (no deployment)
    niser-mlops benchmark --epochs 1 --targets targets.json
    niser-mlops hpo --n-trials 4
    niser-mlops hpo --n-trials 8 --work-pool niser-hpo --shards 2   # on the pool's workers
    niser-mlops run train-and-benchmark/local --param epochs=5   # a served deployment, followed
    niser-mlops compare --experiment niser
    niser-mlops calibrate                        # load-generator honesty check
    niser-mlops http --url URL --data DIR        # sweep any scoring endpoint
    niser-mlops replay --deployment D --data DIR # test sessions through a session server
    niser-mlops prices show|refresh --region us-east-1
    niser-mlops session-server --deployer local --deployment NAME   # Figure 2's session manager

Without MLFLOW_TRACKING_URI the tracking store is ``.state/mlflow.db`` (SQLite) in the current
directory; without PREFECT_API_URL, Prefect runs the flow on a temporary local server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench.cli import COMMANDS
from bench.cli_options import LEVELS, POSITIVE, FiniteRange
from bench.load_settings import DEFAULT_LEVELS, MAX_LEVEL_S
from sessions.server import session_server


def _defaults() -> None:
    state = Path(".state").resolve()
    state.mkdir(exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # MLflow would print a GenAI-view link per run; the flow prints classic-view ones
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _json_option(value: str | None, option: str) -> Any:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON nor a JSON file: {exc}", param_hint=option) from None


def _count(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """A click callback refusing a count outside 1..its flow parameter's upper bound
    (``flows.parameters.COUNT_LIMITS``, looked up when the command runs), saying why."""
    from flows.parameters import COUNT_LIMITS

    if value < 1:
        raise click.BadParameter(f"must be >= 1, got {value}")
    limit, why = COUNT_LIMITS[str(param.name)]
    if value > limit:
        raise click.BadParameter(f"{value} is above the limit of {limit:,}: {why}")
    return value


def _checked(dataset: str, hyperparameters: str | None, epochs: int,
             metric: str | None = None) -> Any:
    """The ``--hyperparameters`` JSON, once it, ``--dataset``'s synthetic options and the
    compared ``metric`` have passed the flows' checks (``flows.parameters.check_run``): a click
    error naming the option otherwise, before a server starts or anything is trained."""
    from pydantic import ValidationError

    from flows.parameters import check_run, train_config
    from niser.train import TrainConfig

    raw = _json_option(hyperparameters, "--hyperparameters")
    try:
        config = train_config(None if raw is None else TrainConfig.model_validate(raw),
                              epochs=epochs)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.BadParameter(problems, param_hint="--hyperparameters") from None
    try:
        check_run(dataset, config, *([metric] if metric else []))
    except ValueError as exc:
        hint = "--dataset" if str(exc).startswith("dataset spec") else (
            "--metric" if metric else "--hyperparameters")
        raise click.BadParameter(str(exc), param_hint=hint) from None
    return raw


def _training_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--train-on`` and ``--training`` (the ``TrainingSettings`` of a SageMaker job)."""
    command = click.option(
        "--training", default=None,
        help="SageMaker training job settings as JSON or a JSON file, e.g. "
             "'{\"instance_type\": \"ml.c5.xlarge\", \"spot\": true}'.")(command)
    return click.option("--train-on", type=click.Choice(["local", "sagemaker"]),
                        default="local", show_default=True,
                        help="Train here or in SageMaker training jobs.")(command)


def _training(train_on: str, training: str | None) -> dict[str, Any]:
    """The flows' ``train_on`` and ``training``; a bad setting is a click error naming it."""
    from pydantic import ValidationError

    from deployers.sagemaker.training import TrainingSettings

    raw = _json_option(training, "--training")
    if raw is not None:
        if train_on != "sagemaker":
            raise click.BadParameter("applies to --train-on sagemaker", param_hint="--training")
        try:
            TrainingSettings.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                                 for e in exc.errors())
            raise click.BadParameter(problems, param_hint="--training") from None
    return {"train_on": train_on, "training": raw}


@click.group()
def main() -> None:
    """Train, register, deploy and benchmark NISER."""


@main.command()
@click.option("--dataset", default="synthetic", show_default=True,
              help="'synthetic', a preprocessed folder, or a raw click log.")
@click.option("--epochs", type=int, default=3, show_default=True,
              callback=_count)
@click.option("--hyperparameters", help="TrainConfig fields as JSON or a JSON file.")
@click.option("--experiment", default="niser", show_default=True)
@_training_options
def train(dataset: str, epochs: int, hyperparameters: str | None, experiment: str,
          train_on: str, training: str | None) -> None:
    """Train, evaluate, log and register (no deployment)."""
    _run(dataset=dataset, epochs=epochs, experiment=experiment, targets=[],
         hyperparameters=_checked(dataset, hyperparameters, epochs),
         **_training(train_on, training))


@main.command()
@click.option("--dataset", default="synthetic", show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True,
              callback=_count)
@click.option("--targets", help="Target list as JSON or a JSON file (default: the four built-in).")
@click.option("--hyperparameters", help="TrainConfig fields as JSON or a JSON file.")
@click.option("--levels", type=LEVELS, default=",".join(map(str, DEFAULT_LEVELS)),
              show_default=True, help="Closed-loop user counts, comma-separated (1..1024 users, "
                                      "at most 32 levels).")
@click.option("--slo-ms", type=POSITIVE, default=50.0, show_default=True)
@click.option("--level-seconds", type=FiniteRange(min=0, min_open=True, max=MAX_LEVEL_S),
              default=3.0, show_default=True)
@click.option("--experiment", default="niser", show_default=True)
@_training_options
def benchmark(dataset: str, epochs: int, targets: str | None, hyperparameters: str | None,
              levels: list[int], slo_ms: float, level_seconds: float, experiment: str,
              train_on: str, training: str | None) -> None:
    """Train, register, deploy to every target and benchmark."""
    _run(dataset=dataset, epochs=epochs, targets=_json_option(targets, "--targets"),
         hyperparameters=_checked(dataset, hyperparameters, epochs), levels=levels,
         slo_ms=slo_ms, level_seconds=level_seconds, experiment=experiment,
         **_training(train_on, training))


def _run(**kwargs: Any) -> None:
    _defaults()
    from flows.train_and_benchmark import train_and_benchmark

    train_and_benchmark(**kwargs)


@main.command()
@click.option("--dataset", default="synthetic", show_default=True)
@click.option("--n-trials", type=int, default=4, show_default=True,
              callback=_count)
@click.option("--epochs", type=int, default=2, show_default=True,
              callback=_count)
@click.option("--metric", default="val_recall_20", show_default=True,
              help="The validation metric the trials maximise (val_recall_K, val_mrr_K).")
@click.option("--study-name", default="niser-hpo", show_default=True)
@click.option("--work-pool", default=None,
              help="Run the trials on this Prefect process work pool's workers (needs "
                   "PREFECT_API_URL); default: here, one after the other.")
@click.option("--shards", type=int, default=2, show_default=True,
              callback=_count,
              help="Flow runs started on --work-pool.")
@click.option("--storage", default=None,
              help="Optuna database URL without password (sqlite:///..., postgresql://...); "
                   "default: the journal file, or SQLite beside it with --work-pool.")
@click.option("--heartbeat-s", type=int, default=10, show_default=True,
              callback=_count)
@click.option("--grace-s", type=int, default=60, show_default=True,
              callback=_count,
              help="A trial silent this long (no heartbeat) is failed.")
@_training_options
def hpo(dataset: str, n_trials: int, epochs: int, metric: str, study_name: str,
        work_pool: str | None, shards: int, storage: str | None, heartbeat_s: int, grace_s: int,
        train_on: str, training: str | None) -> None:
    """Run an Optuna study (journal storage under .state/optuna)."""
    _checked(dataset, None, epochs, metric)
    training_args = _training(train_on, training)
    _defaults()
    from flows.hpo import hpo as hpo_flow

    hpo_flow(dataset=dataset, n_trials=n_trials, epochs=epochs, metric=metric,
             study_name=study_name,
             work_pool=work_pool, shards=shards, storage=storage, heartbeat_s=heartbeat_s,
             grace_s=grace_s, **training_args)


@main.command("run")
@click.argument("deployment", default="train-and-benchmark/local")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A flow parameter (JSON values allowed), as `prefect deployment run --param`.")
@click.option("--timeout", type=POSITIVE, default=1500, show_default=True,
              help="Seconds to follow the run before giving up (the run goes on).")
def run_deployment(deployment: str, params: tuple[str, ...], timeout: float) -> None:
    """Run a served deployment and follow it: a line per step, then its summary."""
    if not os.environ.get("PREFECT_API_URL", "").startswith("http"):
        raise click.ClickException("PREFECT_API_URL is not set: start the services "
                                   "(`python scripts/services.py start`), then `. .state/env.sh`")
    from flows.follow import parse_params, run_and_follow

    try:
        parameters = parse_params(params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    try:
        run = run_and_follow(deployment, parameters, timeout, out=click.echo)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    state = run.state
    if state is None or not state.is_completed():
        raise click.ClickException(f"flow run {run.name} ended {state.name if state else 'without a state'}"
                                   f": {state.message if state else ''}")


@main.command()
@click.option("--experiment", default="niser", show_default=True)
@click.option("--parent-run-id", help="Compare the targets of one benchmark run.")
@click.option("--latest", is_flag=True, help="Only the latest benchmark run of the experiment.")
def compare(experiment: str, parent_run_id: str | None, latest: bool) -> None:
    """Print the benchmark table across runs from MLflow."""
    _defaults()
    import pandas as pd

    from bench.report import compare_table, latest_benchmark_run

    if latest and not parent_run_id:
        latest_run = latest_benchmark_run(experiment)
        if latest_run is None:
            raise click.ClickException(f"no benchmark run in experiment {experiment!r}")
        parent_run_id = latest_run.info.run_id
    table = compare_table(parent_run_id=parent_run_id,
                          experiment_name=None if parent_run_id else experiment)
    with pd.option_context("display.max_rows", 500, "display.width", 200):
        click.echo(table.to_string(index=False))


for _command in [*COMMANDS, session_server]:
    main.add_command(_command)


if __name__ == "__main__":
    main()
