"""Options shared by the commands that deploy a registered model and send it a dataset's
sessions (``power-tune``, ``predict-check``, ``paper``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def model_and_dataset(f: F) -> F:
    """``--model-uri`` (default ``models:/niser@champion``) and ``--dataset`` (default
    ``synthetic``)."""
    f = click.option("--dataset", default="synthetic", show_default=True,
                     help="The dataset the model was trained on: its test sessions are the "
                          "payloads ('synthetic', a preprocessed folder or a raw click log)."
                     )(f)
    return click.option("--model-uri", default="models:/niser@champion", show_default=True,
                        help="The registered model (it must carry its Lambda function code)."
                        )(f)
