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

import os
from typing import Literal, get_args
from urllib.parse import urlparse

Provenance = Literal["measured-real", "measured-local", "predicted"]
PROVENANCES: tuple[Provenance, ...] = get_args(Provenance)

AWS_DEPLOYERS = frozenset({"sagemaker", "lambda"})
_WEAKEST_FIRST: tuple[Provenance, ...] = ("measured-local", "predicted", "measured-real")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _aws_is_local() -> bool:
    url = os.environ.get("AWS_ENDPOINT_URL", "")
    return bool(url) and urlparse(url).hostname in _LOCAL_HOSTS


def of_target(deployer: str) -> Provenance:
    """``measured-real`` for an AWS deployer run against real AWS, else ``measured-local``."""
    if deployer in AWS_DEPLOYERS and not _aws_is_local():
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
