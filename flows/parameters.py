"""The flows' parameter types, and the checks those types cannot express.

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

from deployers.sagemaker.training import TrainingSettings
from niser.train import TrainConfig

Count = Annotated[int, Field(ge=1)]
"""An integer >= 1 (epochs, trials)."""

Levels = Annotated[list[Count], Field(min_length=1)]
"""One or more closed-loop concurrent-user counts, each >= 1."""

Positive = Annotated[float, Field(gt=0)]
"""A number > 0 (a latency target in ms)."""


def train_config(hyperparameters: TrainConfig | None, **defaults: Any) -> TrainConfig:
    """``defaults`` (e.g. the flow's ``epochs``) under the fields ``hyperparameters`` sets."""
    given = hyperparameters.model_dump(exclude_unset=True) if hyperparameters else {}
    return TrainConfig(**{**defaults, **given})


def training_settings(train_on: str, training: TrainingSettings | None) -> TrainingSettings | None:
    """The training job's settings when ``train_on`` is ``sagemaker`` (defaults when none are
    given); ``None`` for local training, where ``training`` settings are refused."""
    if train_on == "sagemaker":
        return training or TrainingSettings()
    if training is not None:
        raise ValueError(f"training: settings of a SageMaker training job apply to "
                         f"train_on='sagemaker', not train_on={train_on!r}")
    return None
