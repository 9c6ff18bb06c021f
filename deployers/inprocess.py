"""The registered model loaded in the calling process: the test stand-in and no-network baseline.

Promises:

- ``deploy`` loads ``mlflow.pyfunc.load_model(model_uri)`` and answers one request before it
  returns, so a model that loads but cannot predict fails at deploy time (``DeploymentFailed``).
- The invoker calls ``predict(pd.DataFrame({"session": sessions}), params={"k": k})`` directly:
  no serialisation and no network, so its latency is the model's own. It is safe from many threads
  (the pyfunc's predict holds no per-call state; torch runs one call at a time per thread).
- Deployments live in this process only: ``list`` shows this instance's, ``teardown`` drops the
  loaded model. Nothing outside the process is created, so nothing can leak.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from deployers import wire
from deployers.base import (
    CostDrivers,
    Deployer,
    DeployerError,
    Description,
    Endpoint,
    InvocationError,
    Prediction,
    Settings,
    Undo,
)


class InProcessSettings(Settings):
    """Settings of an in-process deployment."""

    warmup_requests: int = Field(
        default=1, ge=0, le=1000,
        description="Requests answered at deploy time, before the endpoint is returned (0: none).",
    )


@dataclass
class _Loaded:
    model_uri: str
    settings: InProcessSettings
    model: Any


def _to_prediction(out: Any, sessions: int) -> Prediction:
    """The pyfunc's output (a DataFrame, or a list of row dicts) read as the wire format."""
    rows = out.to_dict("records") if hasattr(out, "to_dict") else list(out)
    return wire.decode_response({"predictions": rows}, sessions)


class InProcessInvoker:
    """Calls a loaded pyfunc's ``predict``; raises ``InvocationError`` on any failure."""

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self.model = model

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        import pandas as pd

        try:
            out = self.model.predict(pd.DataFrame({"session": list(sessions)}), params={"k": k})
            return _to_prediction(out, len(sessions))
        except Exception as exc:
            raise InvocationError(
                f"in-process predict on {self.name!r} failed: {type(exc).__name__}: {exc}",
                status=None, body=str(exc),
            ) from exc


class InProcessDeployer(Deployer[InProcessSettings]):
    """Loads the pyfunc with ``mlflow.pyfunc.load_model`` in this process."""

    name: ClassVar[str] = "inprocess"
    settings_cls = InProcessSettings

    def __init__(self) -> None:
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def create(self, model_uri: str, s: InProcessSettings, name: str, undo: Undo) -> Endpoint:
        """Load ``model_uri`` and answer ``warmup_requests`` requests; see the module docstring."""
        import mlflow.pyfunc

        with self._lock:
            if name in self._loaded:
                raise DeployerError(f"in-process deployment {name!r} already exists; tear it "
                                    "down or pick another name")
        model = mlflow.pyfunc.load_model(model_uri)
        with self._lock:
            self._loaded[name] = _Loaded(model_uri, s, model)
        undo.push(f"loaded model {name}", lambda: self.teardown(name))
        invoker = InProcessInvoker(name, model)
        for _ in range(s.warmup_requests):
            invoker([[1]], k=1)
        return Endpoint(self.name, name, model_uri, None, invoker, s)

    def invoker(self, name: str) -> InProcessInvoker:
        """The invoker of the loaded deployment ``name``; ``KeyError`` if absent."""
        return InProcessInvoker(name, self._get(name).model)

    def _get(self, name: str) -> _Loaded:
        with self._lock:
            if name not in self._loaded:
                raise KeyError(f"no in-process deployment named {name!r} in this process")
            return self._loaded[name]

    def describe(self, name: str) -> Description:
        """The loaded model; ``KeyError`` if absent."""
        loaded = self._get(name)
        return Description(
            target=self.name, name=name, status="loaded",
            cost=CostDrivers(kind="inprocess"),
            details={"model_uri": loaded.model_uri},
        )

    def teardown(self, name: str) -> None:
        """Drop the loaded model; absent is not an error."""
        with self._lock:
            self._loaded.pop(name, None)

    def list(self) -> list[str]:
        """Names loaded in this deployer instance."""
        with self._lock:
            return sorted(self._loaded)
