"""The flows' parameter types and their bounds, and the checks those types cannot express.

The flow signatures use these types, so Prefect validates a run's parameters (JSON from the UI,
``prefect deployment run --param`` or a direct call is coerced into ``TrainConfig`` and
``TargetSpec``) and shows their schema; a refused value is named by its path, e.g.
``hyperparameters.lr`` or ``targets.1.name``. What needs the deployer registry
(``bench.targets.validate_targets``) or combines two parameters is checked first in the flow
body, by plain functions that need no Prefect server.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from bench.fanout import MAX_PARALLEL, PARALLEL_WHY
from bench.load_settings import LEVELS_WHY, MAX_LEVELS, Level, LevelSeconds
from deployers.sagemaker.training import TrainingSettings
from niser.bounds import AtMost
from niser.raw import check_synthetic_spec
from niser.registry import COMPARED_METRIC
from niser.train import EPOCHS_WHY, MAX_EPOCHS, Epochs, TrainConfig, check_compared_metric

EpochCount = Annotated[Epochs, Field(ge=1)]
"""Epochs: 1..``niser.train.MAX_EPOCHS``."""

Levels = Annotated[list[Annotated[Level, Field(ge=1)]], Field(min_length=1),
                   AtMost(MAX_LEVELS, LEVELS_WHY, items=True)]
"""1..``MAX_LEVELS`` closed-loop concurrent-user counts, each 1..``MAX_LEVEL``
(``bench.load_settings``)."""

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite number > 0 (a latency target in ms)."""

Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite number >= 0 (requests/s)."""

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A share of the time, 0..1."""

WindowSeconds = Annotated[LevelSeconds, Field(gt=0, allow_inf_nan=False)]
"""A level's window: > 0, at most ``bench.load_settings.MAX_LEVEL_S``."""

WarmupSeconds = Annotated[LevelSeconds, Field(ge=0, allow_inf_nan=False)]
"""A level's warm-up: >= 0, at most ``bench.load_settings.MAX_LEVEL_S``."""

ParallelTargets = Annotated[int, Field(ge=1), AtMost(MAX_PARALLEL, PARALLEL_WHY)]
"""Targets benchmarked at once: 1..``bench.fanout.MAX_PARALLEL``."""

MAX_TRIALS = 1000
TRIALS_WHY = ("each trial trains a model and keeps a nested MLflow run, and the search space has "
              "four parameters")
MAX_SHARDS = 64
SHARDS_WHY = ("each shard is a flow run on a worker holding a database connection; the study's "
              "storage serialises their claims")
MAX_HEARTBEAT_S = 3600
MAX_WAIT_S = 7 * 24 * 3600
"""The longest ``grace_s`` (a trial silent this long is failed) and ``timeout_s`` of a run."""

Trials = Annotated[int, Field(ge=1), AtMost(MAX_TRIALS, TRIALS_WHY)]
"""HPO trials of one run: 1..``MAX_TRIALS``."""

Shards = Annotated[int, Field(ge=1), AtMost(MAX_SHARDS, SHARDS_WHY)]
"""HPO shard flow runs on a work pool: 1..``MAX_SHARDS``."""

HEARTBEAT_WHY = "a trial's process proves it is alive at least hourly"
WAIT_WHY = "a week; a run is followed, not left for longer"

Heartbeat = Annotated[int, Field(ge=1), AtMost(MAX_HEARTBEAT_S, HEARTBEAT_WHY)]
"""Seconds between a trial's heartbeats."""

WaitSeconds = Annotated[int, Field(ge=1), AtMost(MAX_WAIT_S, WAIT_WHY)]
"""Seconds an HPO run waits (for a silent trial, for its shards)."""

COUNT_LIMITS: dict[str, tuple[int, str]] = {
    "epochs": (MAX_EPOCHS, EPOCHS_WHY), "n_trials": (MAX_TRIALS, TRIALS_WHY),
    "shards": (MAX_SHARDS, SHARDS_WHY), "heartbeat_s": (MAX_HEARTBEAT_S, HEARTBEAT_WHY),
    "grace_s": (MAX_WAIT_S, WAIT_WHY), "timeout_s": (MAX_WAIT_S, WAIT_WHY)}
"""The integer parameters' upper bounds and why, by parameter name (the command line's too)."""


def train_config(hyperparameters: TrainConfig | None, **defaults: Any) -> TrainConfig:
    """``defaults`` (e.g. the flow's ``epochs``) under the fields ``hyperparameters`` sets."""
    given = hyperparameters.model_dump(exclude_unset=True) if hyperparameters else {}
    return TrainConfig(**{**defaults, **given})


def check_run(dataset: str, config: TrainConfig, metric: str = COMPARED_METRIC) -> None:
    """What the types cannot check, before anything is created or trained: a synthetic
    ``dataset``'s options (``niser.raw.check_synthetic_spec``) and that ``metric``, the one the
    run compares models on, is a validation metric the evaluation computes for ``config.ks``
    (``niser.train.check_compared_metric``); ``ValueError`` naming the parameter otherwise."""
    check_synthetic_spec(dataset)
    try:
        check_compared_metric(metric, config.ks)
    except ValueError as exc:
        where = "" if metric != COMPARED_METRIC else (
            " (the registry compares champion and challenger on it: keep 20 in "
            "hyperparameters.ks)")
        raise ValueError(f"{exc}{where}") from None


def training_settings(train_on: str, training: TrainingSettings | None) -> TrainingSettings | None:
    """The training job's settings when ``train_on`` is ``sagemaker`` (defaults when none are
    given); ``None`` for local training, where ``training`` settings are refused."""
    if train_on == "sagemaker":
        return training or TrainingSettings()
    if training is not None:
        raise ValueError(f"training: settings of a SageMaker training job apply to "
                         f"train_on='sagemaker', not train_on={train_on!r}")
    return None
