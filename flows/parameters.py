"""The flows' parameter types, and the checks those types cannot express.

The flow signatures use these types, so Prefect validates a run's parameters (JSON from the UI,
``prefect deployment run --param`` or a direct call is coerced into ``TrainConfig`` and
``TargetSpec``) and shows their schema; a refused value is named by its path, e.g.
``hyperparameters.lr`` or ``targets.1.name``. What needs the deployer registry or combines two
parameters is checked here, first in the flow body, by plain functions that need no Prefect server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field

from bench.targets import TargetSpec, validate_targets
from deployers.base import SettingsError
from deployers.registry import UnknownDeployerError
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


def check_targets(targets: Sequence[TargetSpec]) -> list[TargetSpec]:
    """Every target names a registered deployer with settings it accepts; names are unique.

    A ``ValueError`` names the target by its place in the list, e.g. ``targets[1].deployer``.
    """
    for i, spec in enumerate(targets):
        try:
            validate_targets([spec])
        except UnknownDeployerError as exc:
            raise ValueError(f"targets[{i}].deployer={spec.deployer!r}: {exc}") from None
        except SettingsError as exc:
            raise ValueError(f"targets[{i}].settings ({spec.name}): {exc}") from None
    return validate_targets(list(targets))
