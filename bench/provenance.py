"""Where a figure comes from: the one vocabulary, the rule that picks it for a measured target
and the rule that combines the provenances of a figure's inputs.

- ``measured-real``: measured on a real AWS endpoint.
- ``measured-local``: measured on a stand-in on this machine, shaped like its target (the local
  server, the in-process baseline, the SageMaker and Lambda stand-ins).
- ``predicted``: from a performance model with validated error.

A figure is only as good as its weakest input: resting on any ``measured-local`` input it is
``measured-local``, else on any ``predicted`` input ``predicted``, else ``measured-real``.
"""

from __future__ import annotations

from typing import Literal, get_args

from deployers import aws
from deployers.registry import deployer_class

Provenance = Literal["measured-real", "measured-local", "predicted"]
PROVENANCES: tuple[Provenance, ...] = get_args(Provenance)

MEANING: dict[Provenance, str] = {
    "measured-real": "measured on a real AWS endpoint",
    "measured-local": "measured on this machine, on a stand-in shaped like the target (not on AWS)",
    "predicted": "computed by a performance model from other measurements, not measured",
}
"""One line per label, for readers of a report."""


def describe(label: Provenance) -> str:
    """``label: its meaning``, the words a report prints beside its figures."""
    return f"{label}: {MEANING[label]}"

_WEAKEST_FIRST: tuple[Provenance, ...] = ("measured-local", "predicted", "measured-real")


def of_target(deployer: str) -> Provenance:
    """``measured-real`` for a deployer of an AWS service reached in AWS, else
    ``measured-local`` (this machine's targets, and AWS services reached on this machine)."""
    service = deployer_class(deployer).aws_service
    if service is not None and not aws.endpoint_is_local(service):
        return "measured-real"
    return "measured-local"


def combine(*inputs: Provenance) -> Provenance:
    """The provenance of a figure computed from ``inputs`` (at least one)."""
    if not inputs:
        raise ValueError("combine needs at least one provenance: a figure rests on something")
    for p in _WEAKEST_FIRST:
        if p in inputs:
            return p
    raise ValueError(f"unknown provenance in {inputs!r}; known: {', '.join(PROVENANCES)}")
