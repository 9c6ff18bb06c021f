"""The deployer interface: how a registered model gets behind an endpoint and how to call it.

A deployer has five promises, each written on its method:

- ``deploy`` blocks until the endpoint answers. It is one template for every target: parse the
  settings into the target's typed settings, check the deployment name (``NAME_RULE``), then run
  the target's ``create`` step with an undo stack. On an ``Exception`` everything pushed on the
  stack is undone, newest first, and ``DeploymentFailed`` is raised; on any other
  ``BaseException`` (Ctrl-C, ``SystemExit``) the stack is undone and the exception re-raised
  unchanged. Targets fill in ``create`` only.
- ``invoker`` returns a callable that sends one request to a deployed endpoint.
- ``describe`` says what is running and what drives its cost.
- ``teardown`` is idempotent: tearing down something absent is not an error.
- ``list`` names the deployments the deployer can see.

``with deployer.deployed(model_uri, settings) as endpoint:`` always tears down.

Exceptions (one root)::

    DeployerError (Exception)
     +-- SettingsError (+ ValueError)          bad settings or name, refused before anything exists
     +-- UnknownDeployerError (+ KeyError)     no deployer registered under that name
     +-- DeploymentFailed (+ RuntimeError)     deploy could not finish; what it created is gone
     +-- InvocationError (+ RuntimeError)      one request failed (status code and body attached;
                                               ``connection``: no answer, the connection failed)
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from deployers.ownership import Owner


class DeployerError(Exception):
    """Root of every error the deployers raise."""


class SettingsError(DeployerError, ValueError):
    """Deployer settings (or a deployment name) were refused before any resource was created."""


class UnknownDeployerError(DeployerError, KeyError):
    """No deployer is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its argument; print the sentence instead
        return str(self.args[0])


class DeploymentFailed(DeployerError, RuntimeError):
    """A deployment could not finish; everything it had created was deleted."""


class InvocationError(DeployerError, RuntimeError):
    """One request to a deployed endpoint failed. ``connection`` is True when no answer came
    because the connection failed: refused, reset, DNS, a timeout to connect."""

    def __init__(self, message: str, status: int | None = None, body: str = "",
                 connection: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.connection = connection


# A deployment name valid for every target: it becomes a SageMaker endpoint name (63 characters,
# letters, digits, dashes), a Lambda function name, an IAM role prefix, a file name. It is never
# a path.
NAME_RULE = re.compile(r"^[a-z0-9](?:-?[a-z0-9]){0,62}$")
NAME_RULE_TEXT = ("1-63 lowercase letters, digits and single dashes, starting and ending with a "
                  "letter or digit")


def check_name(name: str) -> str:
    """``name`` when it follows ``NAME_RULE``; ``SettingsError`` naming the rule otherwise."""
    if not isinstance(name, str) or not NAME_RULE.match(name):
        raise SettingsError(f"name={name!r}: a deployment name is {NAME_RULE_TEXT}")
    return name


class Settings(BaseModel):
    """Base of every deployer's settings: typed, every field described, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | Settings | None) -> Self:
        """Validate ``raw`` into settings; ``SettingsError`` names the field and valid values."""
        return parse_settings(cls, raw)


S = TypeVar("S", bound=Settings)


def parse_settings(cls: type[S], raw: Mapping[str, Any] | Settings | None) -> S:
    """Validate ``raw`` into ``cls``; ``SettingsError`` names the field and the valid values."""
    if isinstance(raw, cls):
        return raw
    if isinstance(raw, Settings):
        raw = raw.model_dump()
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
class Usage:
    """CPU the shaped process groups of one stand-in deployment used so far (cumulative).

    ``shaping`` is the cgroup layout (``cgroup-v1``/``cgroup-v2``); ``groups`` counts every
    group the deployment had, ended ones included (a Lambda environment that was discarded
    keeps its last reading), ``live`` those that exist now; ``quota_cpus`` is each group's CPU
    quota (``None``: no quota). ``since(earlier)`` is what was used between two readings.
    """

    shaping: str
    groups: int
    live: int
    quota_cpus: float | None
    periods: int = 0
    throttled_periods: int = 0
    throttled_s: float = 0.0
    used_cpu_s: float = 0.0

    def since(self, earlier: Usage) -> Usage:
        """What was used between ``earlier`` and this reading (group counts: this reading's)."""
        return replace(self, periods=self.periods - earlier.periods,
                       throttled_periods=self.throttled_periods - earlier.throttled_periods,
                       throttled_s=self.throttled_s - earlier.throttled_s,
                       used_cpu_s=self.used_cpu_s - earlier.used_cpu_s)


@dataclass(frozen=True)
class Capacity:
    """How many requests this machine can serve at once at a deployment's configured shape
    (e.g. Lambda environments of that memory size at their full CPU share), and why."""

    concurrency: int
    reason: str


@dataclass(frozen=True)
class Prediction:
    """One response: per session, the top-k raw item ids and their scores."""

    items: list[list[int]]
    scores: list[list[float]]
    raw: Any = None


class Invoker(Protocol):
    """Sends one request (a batch of sessions of raw item ids) and returns the parsed answer.

    Raises ``InvocationError`` on a non-success answer or a transport failure (``connection``
    set when the connection itself failed). Must be safe to call from many threads at once.
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


class Undo:
    """What a deploy created, as cleanup actions run newest first when it fails, and on whose
    behalf: ``owner`` (its ``tags()`` go on every resource it creates).

    ``gone`` says which exceptions of an action mean "already absent" (not a problem).
    """

    def __init__(self, gone: Callable[[BaseException], bool] = lambda exc: False,
                 owner: Owner | None = None) -> None:
        self.steps: list[tuple[str, Callable[[], Any]]] = []
        self._gone = gone
        self.owner = owner or Owner("unnamed")

    def push(self, what: str, action: Callable[[], Any]) -> None:
        """Register the cleanup of ``what`` (push it before or right after creating it)."""
        self.steps.append((what, action))

    def run(self) -> list[str]:
        """Run every action, newest first; returns the problems of those that failed."""
        problems = []
        while self.steps:
            what, action = self.steps.pop()
            try:
                action()
            except Exception as exc:
                if not self._gone(exc):
                    problems.append(f"{what}: {type(exc).__name__}: {exc}")
        return problems


# Methods whose first argument is a deployment name: every deployer's are wrapped so that the
# name is checked (``check_name``) before the method runs. A path-like name never reaches a
# deployer's own code.
NAMED_METHODS = ("describe", "teardown", "invoker", "usage", "capacity", "update")


def _checks_name(method: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(method, "__checks_name__", False):
        return method

    @functools.wraps(method)
    def checked(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        check_name(name)
        return method(self, name, *args, **kwargs)

    checked.__checks_name__ = True  # type: ignore[attr-defined]
    return checked


class Deployer(ABC, Generic[S]):
    """Gets a registered MLflow model behind an endpoint; subclasses set ``name``, ``settings_cls``
    and fill in ``create``. Every method of ``NAMED_METHODS`` refuses a name that breaks
    ``NAME_RULE`` with ``SettingsError`` first, in every subclass."""

    name: ClassVar[str]
    settings_cls: type[S]
    # The AWS service the deployment runs on (None: this machine); ``aws.endpoint_is_local`` of
    # it tells a real endpoint from a stand-in.
    aws_service: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method in NAMED_METHODS:
            if method in cls.__dict__:
                setattr(cls, method, _checks_name(cls.__dict__[method]))

    def parse_settings(self, raw: Mapping[str, Any] | Settings | None) -> S:
        """Validate settings before any resource exists (``SettingsError`` when refused)."""
        return parse_settings(self.settings_cls, raw)

    def deployment_name(self, settings: S, name: str | None) -> str:
        """The name to deploy under: ``name``, else a fresh one. Checked against ``NAME_RULE``."""
        return name or self.new_name()

    @staticmethod
    def gone(exc: BaseException) -> bool:
        """Whether an exception of a cleanup action means the resource is already absent."""
        return isinstance(exc, KeyError | FileNotFoundError | ProcessLookupError)

    def deploy(self, model_uri: str, settings: Mapping[str, Any] | Settings | None = None,
               name: str | None = None, run_id: str | None = None) -> Endpoint:
        """Deploy ``model_uri`` and block until it answers (the policy of the module docstring).

        Everything created carries the ownership tags (``deployers.ownership``) of MLflow run
        ``run_id`` (default: the active run, if any), so ``niser-mlops sweep`` finds it.

        ``SettingsError`` before anything is created; ``DeploymentFailed`` after everything that
        was created is deleted; Ctrl-C and ``SystemExit`` propagate unchanged, after the same
        cleanup.
        """
        s = self.parse_settings(settings)
        name = check_name(self.deployment_name(s, name))
        if run_id is None:
            import mlflow  # the tracking client only when a deploy happens

            active = mlflow.active_run()
            run_id = active.info.run_id if active is not None else None
        undo = Undo(self.gone, Owner(name, run_id))
        try:
            return self.create(model_uri, s, name, undo)
        except Exception as exc:
            problems = undo.run()
            left = (f"; cleanup problems: {problems}" if problems
                    else "; everything it created was deleted")
            raise DeploymentFailed(f"{self.name} deployment {name!r} of {model_uri} failed: "
                                   f"{type(exc).__name__}: {exc}{left}") from exc
        except BaseException:
            undo.run()
            raise

    @abstractmethod
    def create(self, model_uri: str, settings: S, name: str, undo: Undo) -> Endpoint:
        """Create the deployment ``name`` and return once it answers.

        Push the cleanup of every resource on ``undo`` as it is created; raise on any failure
        (the base undoes and reports).
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

    @_checks_name
    def usage(self, name: str) -> Usage | None:
        """CPU used by the shaped groups of ``name`` so far; ``None`` when it is not shaped (a
        real AWS endpoint, an unshaped stand-in, no cgroup support)."""
        return None

    @_checks_name
    def capacity(self, name: str) -> Capacity | None:
        """How much concurrency this machine can give ``name`` at its configured shape;
        ``None`` when this machine sets no such limit (a real AWS endpoint, an unshaped one)."""
        return None

    def new_name(self) -> str:
        """A fresh deployment name that follows ``NAME_RULE``."""
        return f"niser-{self.name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def deployed(self, model_uri: str, settings: Mapping[str, Any] | Settings | None = None,
                 name: str | None = None, run_id: str | None = None) -> Iterator[Endpoint]:
        """Deploy, yield the endpoint, and always tear down, whatever happens inside."""
        endpoint = self.deploy(model_uri, settings, name, run_id)
        try:
            yield endpoint
        finally:
            self.teardown(endpoint.name)
