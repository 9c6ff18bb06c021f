"""The MLflow serving artifact: a models-from-code pyfunc around ``niser.inference.Recommender``.

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>,
artifacts={"recommender": <a directory written by Recommender.save>})`` (see
``niser.registry.log_recommender``). The serving contract:

Request (JSON, ``dataframe_records`` or ``dataframe_split``), one row per session::

    {"dataframe_records": [{"session": [100000, 100007, 100014]}], "params": {"k": 20}}

``session`` is the list of raw item ids clicked so far, oldest first; ``params.k`` (1..1000,
default 20) is the number of recommendations. Response, one row per session, in request order::

    {"predictions": [{"items": [...], "scores": [...], "unknown_items": [...],
                      "fallback": false}]}

(In Python, ``predict`` returns those rows as a list of dicts; ``pd.DataFrame(rows)`` makes the
table.)

``items`` are the top-k raw item ids, best first (fewer than k only when the catalogue holds
fewer than k items), ``scores`` their scores, ``unknown_items`` the raw ids of the session that the
model does not know (they are dropped), and ``fallback`` is true when no known item remained (an
empty session included): ``items`` are then the most popular items.

Every malformed request raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which the
scoring server answers with HTTP 400 and the message; each message names the row and field and
the offending value. Served by MLflow's scoring server, the request is checked before MLflow
parses it, by the same rules as the Lambda handler (``niser.serving_guard``: 415 for another
Content-Type, 400 for a body that breaks ``niser.contract``, short error bodies). Nothing here
keeps state between requests, so the server keeps serving.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

from niser import batching, contract, serving_guard
from niser.contract import (
    DEFAULT_K,
    MAX_SESSIONS,
    RequestError,
    check_sizes,
    session_ids,
)
from niser.inference import Recommendation, Recommender

SESSION_COLUMN = "session"
ARTIFACT_KEY = "recommender"
OUTPUT_COLUMNS = ("items", "scores", "unknown_items", "fallback")
# A request in the contract's shape; the ids are raw ids of the default synthetic catalogue.
EXAMPLE_REQUEST: dict[str, Any] = {
    "dataframe_records": [{SESSION_COLUMN: [100000, 100007, 100014]}],
    "params": {"k": DEFAULT_K},
}


def serving_signature() -> ModelSignature:
    """The logged signature: a ``session`` column, output columns, and ``k`` (long, default 20).

    ``session`` is declared ``Any`` and optional on purpose: a typed ``Array(long)`` column makes
    the scoring server reject floats, strings, nulls and missing columns itself, before
    ``predict`` runs, with messages that name neither the row nor the offending value. Declared
    this way every check happens in ``parse_sessions``, whose messages do. ``k`` stays typed
    (long): MLflow refuses a non-integer ``k`` before ``predict`` with a 400 whose message names
    ``'k'`` and the value; ``parse_k`` checks the range.
    """
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), SESSION_COLUMN, required=False)]),
        outputs=Schema([ColSpec(Array("long"), "items"), ColSpec(Array("double"), "scores"),
                        ColSpec(Array("long"), "unknown_items"), ColSpec("boolean", "fallback")]),
        params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
    )


def input_example() -> tuple[pd.DataFrame, dict[str, Any]]:
    """An input example (frame, params) for ``log_model``: one session of ``EXAMPLE_REQUEST``."""
    return pd.DataFrame(EXAMPLE_REQUEST["dataframe_records"]), dict(EXAMPLE_REQUEST["params"])


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def parse_k(params: dict[str, Any] | None) -> int:
    """``params["k"]`` as an int in 1..MAX_K (``DEFAULT_K`` when absent or None), by the
    contract's rule (``niser.contract.parse_k``; numpy integers as Python ones)."""
    plain = {key: (int(v) if isinstance(v, np.integer) else v) for key, v in (params or {}).items()}
    try:
        return contract.parse_k(plain)
    except RequestError as exc:
        raise _invalid(str(exc)) from None


def _session(value: object, row: int) -> list[int]:
    """One row's session by the shared rules of ``niser.contract`` (also the Lambda handler's)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    try:
        return session_ids(row, value)
    except RequestError as exc:
        raise _invalid(str(exc)) from None


def parse_sessions(model_input: pd.DataFrame | dict[str, Any] | list[Any]) -> list[list[int]]:
    """The ``session`` column as lists of ints, after checking every row."""
    if isinstance(model_input, list | dict):  # records, or columns of equal length
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise _invalid(f"input of type {type(model_input).__name__} is not a table; send "
                       "'dataframe_records' or 'dataframe_split' with a 'session' column")
    n = len(model_input)
    if SESSION_COLUMN not in model_input.columns:
        empty = " (or the request holds no rows)" if n == 0 else ""
        raise _invalid(f"row 0, field '{SESSION_COLUMN}': missing{empty}; every row needs a "
                       f"'{SESSION_COLUMN}' list of raw item ids, e.g. "
                       f"{{\"dataframe_records\": [{{\"{SESSION_COLUMN}\": [1234, 5678]}}]}} "
                       f"(columns received: {[str(c) for c in model_input.columns]})")
    if n == 0:
        raise _invalid(f"row 0, field '{SESSION_COLUMN}': the request holds no sessions (0 rows); "
                       f"send at least one row with a '{SESSION_COLUMN}' list of raw item ids")
    if n > MAX_SESSIONS:
        raise _invalid(f"row {MAX_SESSIONS}, field '{SESSION_COLUMN}': the request holds {n} "
                       f"sessions, more than the {MAX_SESSIONS} allowed; split it into requests "
                       f"of at most {MAX_SESSIONS} rows")
    return [_session(v, row) for row, v in enumerate(model_input[SESSION_COLUMN].tolist())]


def to_rows(recommendations: Sequence[Recommendation]) -> list[dict[str, Any]]:
    """One dict per recommendation with the contract's four fields, in order: what the scoring
    server writes as ``{"predictions": [...]}``, byte for byte as a DataFrame of the same rows
    would be written, without building (and then taking apart) the DataFrame."""
    return [{"items": list(r.items), "scores": list(r.scores),
             "unknown_items": list(r.unknown_items),
             "fallback": bool(r.fallback)} for r in recommendations]


class NiserModel(PythonModel):
    """Loads the Recommender from the ``recommender`` artifact and answers the serving contract.

    Concurrent ``predict`` calls (the scoring server runs each request on a thread of its own)
    are merged into one model call (``niser.batching.Coalescer``) unless batching is off: the
    model's ``model_config`` (``batching``, ``max_batch_sessions``, as logged) and, at serve
    time, ``NISER_BATCHING`` / ``NISER_MAX_BATCH_SESSIONS`` in the server's environment decide.
    Each request is validated on its own thread before it joins a batch, so its 400 is its own.
    """

    recommender: Recommender
    batch_settings: batching.BatchSettings

    def load_context(self, context: PythonModelContext) -> None:
        if ARTIFACT_KEY not in context.artifacts:
            raise MlflowException(f"the model has no '{ARTIFACT_KEY}' artifact (has "
                                  f"{sorted(context.artifacts)}); log it with "
                                  f"artifacts={{'{ARTIFACT_KEY}': <Recommender.save directory>}}")
        # NISER_DEVICE=cuda serves on a GPU (the GPU-endpoint analogue); CPU by default
        self.recommender = Recommender.load(context.artifacts[ARTIFACT_KEY],
                                            device=os.environ.get("NISER_DEVICE", "cpu"))
        try:
            self.batch_settings = batching.from_config(context.model_config, dict(os.environ))
            lean = serving_guard.lean_path(os.environ)
        except ValueError as exc:
            raise MlflowException(f"serving settings: {exc}") from None
        self._recommend: Callable[[list[list[int]], int], Sequence[Recommendation]] = (
            batching.Coalescer(self.recommender.recommend, self.batch_settings.max_sessions)
            if self.batch_settings.enabled else self.recommender.recommend)
        # in a scoring-server process: the contract at its door, and the lean path behind it
        serving_guard.install(lean)

    def answer(self, sessions: list[list[int]], k: int) -> list[dict[str, Any]]:
        """The rows of checked ``sessions`` (``contract.parse_request``'s), batched with the
        other requests in flight when batching is on."""
        return to_rows(self._recommend(sessions, min(k, self.recommender.model.n_items)))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> list[dict[str, Any]]:
        """One row dict per session (``to_rows``); ``pd.DataFrame(rows)`` is the table."""
        k = parse_k(params)
        sessions = parse_sessions(model_input)
        try:
            check_sizes(sessions, k)
        except RequestError as exc:
            raise _invalid(str(exc)) from None
        return self.answer(sessions, k)


mlflow.models.set_model(NiserModel())
