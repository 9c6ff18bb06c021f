"""Our deployers as MLflow deployment targets (``mlflow deployments create -t niser-local ...``).

MLflow finds a target through the ``mlflow.deployments`` entry-point group; the object an entry
point names must hold ``run_local``, ``target_help`` and exactly one ``BaseDeploymentClient``
subclass. ``plugin(deployer_name)`` builds such an object for any registered deployer, so a target
is one line here and one in ``pyproject.toml``::

    mlflow deployments create -t niser-local --name demo -m models:/niser@champion \\
        -C instances=2 -C workers=1
    mlflow deployments predict -t niser-local --name demo --input-path sessions.json
    mlflow deployments delete -t niser-local --name demo

Promises:

- ``-C key=value`` strings go through the deployer's ``Settings``: values are coerced ("2" -> 2,
  "true" -> True) and an unknown key or bad value is refused before anything is created, with a
  message naming the field and the valid keys (an ``MlflowException`` of INVALID_PARAMETER_VALUE).
- ``create_deployment`` blocks until the endpoint answers; ``delete_deployment`` is idempotent;
  ``get_deployment`` of an absent name raises RESOURCE_DOES_NOT_EXIST.
- ``update_deployment`` moves the deployment to the new model/config under the same name; an
  absent ``model_uri`` keeps the current model. A deployer with an ``update`` method (local:
  new servers beside the old, then an nginx reload; Lambda; SageMaker: blue/green) does it
  without an outage, keeping the current settings when no config is given (with a config,
  unset keys take their defaults). Any other deployer is torn down and deployed again (a short
  outage; unset keys take their defaults).
- ``niser-local`` deployments outlive the CLI process that created them: their servers run in
  their own sessions and are recorded under the local state directory
  (``$NISER_LOCAL_STATE_DIR``), where later ``list``/``get``/``predict``/``delete`` calls, from any
  process, find them. ``niser-inprocess`` deployments live in the calling Python process only
  (``get_deploy_client("niser-inprocess")``); from the CLI, use ``run-local``.

SageMaker has no target here: MLflow's built-in ``sagemaker`` target serves it.
"""

from __future__ import annotations

import inspect
import signal
import threading
from collections.abc import Callable
from types import FrameType, SimpleNamespace
from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
)

from deployers import wire
from deployers.base import Deployer, DeployerError, Description, SettingsError, check_name
from deployers.registry import UnknownDeployerError, get_deployer

FLAVOR = "python_function"
_INSTANCES: dict[str, Deployer[Any]] = {}  # one deployer per target and process (in-process state)
_LOCK = threading.Lock()


def _deployer(name: str) -> Deployer[Any]:
    with _LOCK:
        if name not in _INSTANCES:
            try:
                _INSTANCES[name] = get_deployer(name)
            except UnknownDeployerError as exc:
                raise MlflowException(str(exc), error_code=RESOURCE_DOES_NOT_EXIST) from None
        return _INSTANCES[name]


def _check_flavor(flavor: str | None) -> None:
    if flavor not in (None, FLAVOR):
        raise MlflowException(
            f"flavor {flavor!r} is not served; these targets serve the {FLAVOR!r} flavor"
            " (omit --flavor)", error_code=INVALID_PARAMETER_VALUE)


def _as_dict(desc: Description) -> dict[str, Any]:
    return {"name": desc.name, "flavor": FLAVOR, "target": desc.target, "status": desc.status,
            "cost": {k: v for k, v in vars(desc.cost).items() if v is not None},
            **desc.details}


def _name(name: str) -> str:
    """``name`` if it is a deployment name; INVALID_PARAMETER_VALUE naming the rule otherwise
    (a path-like name never reaches a deployer)."""
    try:
        return check_name(name)
    except SettingsError as exc:
        raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def _sessions(inputs: Any) -> tuple[list[list[int]], int]:
    """Sessions and k of ``predict``'s inputs (``deployers.wire.decode_request``)."""
    try:
        return wire.decode_request(inputs)
    except (ValueError, KeyError, TypeError) as exc:
        raise MlflowException(f"cannot read sessions from the inputs: {exc}",
                              error_code=INVALID_PARAMETER_VALUE) from None


class NiserDeploymentClient(BaseDeploymentClient):
    """An MLflow deployment client over one registered deployer (``deployer_name``)."""

    deployer_name = ""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.deployer = _deployer(self.deployer_name)

    def _settings(self, config: dict[str, Any] | None) -> Any:
        try:
            return self.deployer.parse_settings(config or {})
        except SettingsError as exc:
            raise MlflowException(f"{self.target_uri}: {exc}",
                                  error_code=INVALID_PARAMETER_VALUE) from None

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None
                          ) -> dict[str, Any]:
        """Deploy ``model_uri`` as ``name``, blocking until it answers."""
        _check_flavor(flavor)
        return self._deploy(model_uri, self._settings(config), name)

    def _deploy(self, model_uri: str, settings: Any, name: str) -> dict[str, Any]:
        try:
            self.deployer.deploy(model_uri, settings, name)
            return _as_dict(self.deployer.describe(name))
        except SettingsError as exc:  # e.g. a deployment name that breaks the rule
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except DeployerError as exc:
            raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        """Move ``name`` to ``model_uri`` (default: the current model) and ``config``: through
        the deployer's own ``update`` where it has one (no outage), else by teardown + deploy."""
        _check_flavor(flavor)
        name = _name(name)
        update = getattr(self.deployer, "update", None)
        settings = self._settings(config) if config or update is None else None
        current = self.get_deployment(name)
        uri = model_uri or current.get("model_uri")
        if not uri:
            raise MlflowException(f"{name!r} does not record its model; pass --model-uri",
                                  error_code=INVALID_PARAMETER_VALUE)
        if update is None:
            self.deployer.teardown(name)
            return self._deploy(uri, settings, name)
        takes = "settings" in inspect.signature(update).parameters
        if settings is not None and not takes:
            raise MlflowException(f"{self.target_uri}: an update keeps the deployment's settings;"
                                  " omit --config, or delete and create it again",
                                  error_code=INVALID_PARAMETER_VALUE)
        try:
            update(name, uri, **({"settings": settings} if settings is not None else {}))
            return _as_dict(self.deployer.describe(name))
        except SettingsError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except DeployerError as exc:
            raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> None:
        """Tear ``name`` down; absent is not an error."""
        self.deployer.teardown(_name(name))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Every deployment this target can see, as ``{"name": ...}`` dicts."""
        return [{"name": n} for n in self.deployer.list()]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """What runs under ``name`` and its cost drivers; RESOURCE_DOES_NOT_EXIST if absent."""
        try:
            return _as_dict(self.deployer.describe(_name(name)))
        except KeyError as exc:
            raise MlflowException(str(exc.args[0] if exc.args else exc),
                                  error_code=RESOURCE_DOES_NOT_EXIST) from None

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """Score ``inputs`` (see ``_sessions``) on ``deployment_name``."""
        if deployment_name is None:
            raise MlflowException("predict needs a deployment name",
                                  error_code=INVALID_PARAMETER_VALUE)
        sessions, k = _sessions(inputs)
        try:
            invoke = self.deployer.invoker(_name(deployment_name))
        except KeyError as exc:
            raise MlflowException(str(exc.args[0] if exc.args else exc),
                                  error_code=RESOURCE_DOES_NOT_EXIST) from None
        try:
            pred = invoke(sessions, k)
        except DeployerError as exc:
            raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc
        return PredictionsResponse({"predictions": wire.response_rows(pred)})


def _target_help(deployer_name: str) -> Callable[[], str]:
    def target_help() -> str:
        cls = _deployer(deployer_name).settings_cls
        lines = [f"niser-{deployer_name}: the '{deployer_name}' deployer of niser-mlops.",
                 "Target URI: niser-" + deployer_name + ". Config keys (-C key=value):"]
        for key, spec in cls.model_fields.items():
            lines.append(f"  {key} (default {spec.default!r}): {spec.description}")
        return "\n".join(lines)
    return target_help


def _run_local(deployer_name: str) -> Callable[..., None]:
    def run_local(name: str, model_uri: str, flavor: str | None = None,
                  config: dict[str, Any] | None = None) -> None:
        """Deploy, print where it answers, and serve until interrupted; then tear down."""
        _check_flavor(flavor)
        deployer = _deployer(deployer_name)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_signal)
        try:
            with deployer.deployed(model_uri, config or {}, name) as ep:
                print(f"{deployer_name} deployment {ep.name} answers at {ep.url or 'in process'};"
                      " Ctrl-C stops it", flush=True)
                try:
                    while not stop.wait(1.0):
                        pass
                except KeyboardInterrupt:
                    pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    return run_local


def plugin(deployer_name: str) -> SimpleNamespace:
    """The MLflow plugin object (client class, ``run_local``, ``target_help``) of a deployer."""
    client = type(f"{deployer_name.title().replace('_', '')}DeploymentClient",
                  (NiserDeploymentClient,), {"deployer_name": deployer_name,
                                             "__module__": __name__})
    return SimpleNamespace(client=client, run_local=_run_local(deployer_name),
                           target_help=_target_help(deployer_name))


# One line per target; each is also an entry point in pyproject.toml (mlflow.deployments).
local = plugin("local")
inprocess = plugin("inprocess")
aws_lambda = plugin("lambda")
