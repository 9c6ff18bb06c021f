"""Options shared by the commands: the finite number ranges, closed-loop levels, and the model
and dataset of those that deploy a registered model and send it a dataset's sessions
(``power-tune``, ``predict-check``, ``paper``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bench.load_settings import check_levels

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


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``inf`` and ``nan`` (which a range lets through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE = FiniteRange(min=0, min_open=True)
NON_NEGATIVE = FiniteRange(min=0)


class IntList(click.ParamType):
    """Comma-separated integers >= 1, e.g. ``1,2,4,8``; ``check(values, option)``, when given,
    bounds them further (its ``ValueError`` is the option's error)."""

    name = "N,N,..."

    def __init__(self, check: Callable[[list[int], str], list[int]] | None = None) -> None:
        self.check = check

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        text = str(value)
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            self.fail(f"expected comma-separated integers such as 1,2,4,8, got {text!r}", param,
                      ctx)
        if self.check is None:
            if not values or any(v < 1 for v in values):
                self.fail(f"expected integers >= 1, got {text!r}", param, ctx)
            return values
        try:
            return self.check(values, param.opts[0] if param else "levels")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# closed-loop user counts, within ``bench.load_settings.check_levels``'s bounds
LEVELS = IntList(check_levels)
INT_LIST = IntList()
