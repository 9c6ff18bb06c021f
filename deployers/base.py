"""The deployer interface: how a registered model gets behind an endpoint and how to call it.

A deployer has four promises, each written on its method:

- ``deploy`` blocks until the endpoint answers, and on any failure deletes what it created
  before re-raising.
- ``invoker`` returns a callable that sends one request to a deployed endpoint.
- ``describe`` says what is running and what drives its cost.
- ``teardown`` is idempotent: tearing down something absent is not an error.

``with deployer.deployed(model_uri, settings) as endpoint:`` always tears down.

Exceptions::

    DeployerError (RuntimeError)
     +-- DeploymentFailed       deploy could not finish; what it created is gone
     +-- InvocationError        one request failed (status code and body attached)
    SettingsError (ValueError)  bad settings, refused before anything is created
    UnknownDeployerError (KeyError)
"""

from __future__ import annotations

import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError


class DeployerError(RuntimeError):
    """Base class for run-time deployer failures."""


class DeploymentFailed(DeployerError):
    """A deployment could not finish; everything it had created was deleted."""


class InvocationError(DeployerError):
    """One request to a deployed endpoint failed."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class SettingsError(ValueError):
    """Deployer settings were refused before any resource was created."""


class Settings(BaseModel):
    """Base of every deployer's settings: typed, every field described, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | Settings | None) -> Settings:
        """Validate ``raw`` into settings; ``SettingsError`` names the field and valid values."""
        if isinstance(raw, cls):
            return raw
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise SettingsError(_explain(cls, exc)) from None


def _explain(cls: type[BaseModel], exc: ValidationError) -> str:
    lines = [f"invalid {cls.__name__}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            valid = ", ".join(sorted(cls.model_fields))
            lines.append(f"  unknown key {loc!r}; valid keys: {valid}")
        else:
            lines.append(f"  {loc}={got!r}: {err['msg']}")
    return "\n".join(lines)


CostKind = Literal["instance", "lambda", "serverless", "local", "inprocess"]


@dataclass(frozen=True)
class CostDrivers:
    """What a deployment is billed on. Fields that do not apply stay ``None``."""

    kind: CostKind
    instance_type: str | None = None
    instance_count: int | None = None
    memory_mb: int | None = None
    architecture: str | None = None
    provisioned_concurrency: int | None = None
    max_concurrency: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class Description:
    """What is running for one deployment."""

    target: str
    name: str
    status: str
    cost: CostDrivers
    details: dict[str, Any] = field(default_factory=dict)

    def as_params(self) -> dict[str, str]:
        """Flat ``str -> str`` view for MLflow params (no credentials ever appear here)."""
        out = {"target": self.target, "deployment_name": self.name}
        for key, value in vars(self.cost).items():
            if value is not None:
                out[f"cost.{key}"] = str(value)
        for key, value in self.details.items():
            out[f"detail.{key}"] = str(value)
        return out


@dataclass(frozen=True)
class Prediction:
    """One response: per session, the top-k raw item ids and their scores."""

    items: list[list[int]]
    scores: list[list[float]]
    raw: Any = None


class Invoker(Protocol):
    """Sends one request (a batch of sessions of raw item ids) and returns the parsed answer.

    Raises ``InvocationError`` on a non-success answer or a transport failure. Must be safe to
    call from many threads at once.
    """

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction: ...


@dataclass(frozen=True)
class Endpoint:
    """A deployed model: its name, where it answers, and how to call it."""

    target: str
    name: str
    model_uri: str
    url: str | None
    invoke: Invoker
    settings: Settings


class Deployer(ABC):
    """Gets a registered MLflow model behind an endpoint; subclasses set ``name``, ``Settings``."""

    name: ClassVar[str]
    settings_cls: ClassVar[type[Settings]] = Settings

    def parse_settings(self, raw: Mapping[str, Any] | Settings | None) -> Settings:
        """Validate settings before any resource exists."""
        return self.settings_cls.parse(raw)

    @abstractmethod
    def deploy(
        self, model_uri: str, settings: Mapping[str, Any] | Settings | None = None,
        name: str | None = None,
    ) -> Endpoint:
        """Deploy ``model_uri`` and block until it answers.

        On any failure, deletes everything this call created, then raises ``DeploymentFailed``
        (or ``SettingsError`` before anything was created).
        """

    @abstractmethod
    def describe(self, name: str) -> Description:
        """What is running under ``name`` and what drives its cost; ``KeyError`` if absent."""

    @abstractmethod
    def teardown(self, name: str) -> None:
        """Delete everything deployed under ``name``. Idempotent: absent is not an error."""

    @abstractmethod
    def invoker(self, name: str) -> Invoker:
        """A thread-safe invoker for the existing deployment ``name``; ``KeyError`` if absent.

        Works for deployments made by another instance or process wherever the target can see
        them (the MLflow deployment targets' ``predict`` relies on it).
        """

    @abstractmethod
    def list(self) -> list[str]:
        """Names of the deployments this deployer can see."""

    def new_name(self) -> str:
        """A fresh deployment name, valid for every target (lowercase, digits, dashes)."""
        return f"niser-{self.name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def deployed(
        self, model_uri: str, settings: Mapping[str, Any] | Settings | None = None,
        name: str | None = None,
    ) -> Iterator[Endpoint]:
        """Deploy, yield the endpoint, and always tear down, whatever happens inside."""
        endpoint = self.deploy(model_uri, settings, name)
        try:
            yield endpoint
        finally:
            self.teardown(endpoint.name)
