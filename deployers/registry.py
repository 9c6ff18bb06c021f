"""Deployers are found through the ``niser_mlops.deployers`` entry-point group.

Built-ins are registered there exactly like third-party plug-ins (see ``pyproject.toml``), and
loaded lazily: importing this module imports no deployer.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from deployers.base import Deployer, UnknownDeployerError

GROUP = "niser_mlops.deployers"
__all__ = ["GROUP", "UnknownDeployerError", "available", "deployer_class", "get_deployer"]


def available() -> list[str]:
    """Names of every registered deployer, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def deployer_class(name: str) -> type[Deployer[Any]]:
    """The class registered under ``name``; ``UnknownDeployerError`` lists the valid names."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        valid = ", ".join(available()) or "(none: install the project, `pip install -e .`)"
        raise UnknownDeployerError(f"unknown deployer {name!r}; registered deployers: {valid}")
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Deployer)):
        raise TypeError(f"entry point {name!r} in {GROUP} is {cls!r}, not a Deployer subclass")
    return cls


def get_deployer(name: str, **kwargs: Any) -> Deployer[Any]:
    """An instance of the deployer registered under ``name``."""
    return deployer_class(name)(**kwargs)
