"""The scoring wire format, in one place: what every invoker sends and how every answer is read.

Request (the body of ``mlflow models serve``'s ``/invocations``, SageMaker's ``InvokeEndpoint``
and the Lambda event alike)::

    {"dataframe_records": [{"session": [100000, 100007]}, ...], "params": {"k": 20}}

Answer: ``{"predictions": [{"items": [...], "scores": [...], ...}, ...]}``, one row per session
in request order. ``decode_response`` turns it into a ``Prediction`` (``ValueError`` when it is not
that shape); ``decode_request`` reads the request side back, for the MLflow deployment targets'
``predict``, which also takes a DataFrame with a ``session`` column or a plain list of sessions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from deployers.base import Prediction

SESSION = "session"
DEFAULT_K = 20


def request(sessions: Sequence[Sequence[int]], k: int) -> dict[str, Any]:
    """The request object for ``sessions`` (lists of raw item ids) and ``k``."""
    return {"dataframe_records": [{SESSION: [int(i) for i in s]} for s in sessions],
            "params": {"k": int(k)}}


def encode_request(sessions: Sequence[Sequence[int]], k: int) -> bytes:
    """The JSON body of one scoring request."""
    return json.dumps(request(sessions, k)).encode()


def decode_request(inputs: Any) -> tuple[list[list[int]], int]:
    """Sessions and k from a request object (``dataframe_records`` or ``dataframe_split``, with
    optional ``params.k``), a DataFrame with a ``session`` column, or a list of sessions.

    ``ValueError`` says what is missing.
    """
    if isinstance(inputs, dict):
        sessions, params = request_columns(inputs)
        return [list(s) for s in sessions], int((params or {}).get("k", DEFAULT_K))
    if hasattr(inputs, "columns"):
        if SESSION not in inputs.columns:
            raise ValueError(f"inputs need a {SESSION!r} column (lists of raw item ids); got "
                             f"columns {list(inputs.columns)}")
        return [list(s) for s in inputs[SESSION]], DEFAULT_K
    if isinstance(inputs, list):
        return [list(s) for s in inputs], DEFAULT_K
    raise ValueError(f"cannot read sessions from inputs of type {type(inputs).__name__}")


def request_columns(body: dict[str, Any]) -> tuple[list[Any], Any]:
    """The ``session`` values and the ``params`` of a request object, as sent (unchecked);
    ``ValueError`` (or the ``KeyError``/``TypeError``/``IndexError`` of a malformed table) when
    it has no ``dataframe_records`` or ``dataframe_split`` with a ``session`` column."""
    if "dataframe_records" in body:
        return [r[SESSION] for r in body["dataframe_records"]], body.get("params")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        col = list(split["columns"]).index(SESSION)
        return [row[col] for row in split["data"]], body.get("params")
    raise ValueError("inputs dict needs 'dataframe_records' or 'dataframe_split' with a "
                     f"{SESSION!r} column")


def decode_response(payload: Any, expected_rows: int) -> Prediction:
    """A ``Prediction`` from a decoded answer; ``ValueError`` when it is not the contract's."""
    rows = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise ValueError("answer has no 'predictions' list")
    if len(rows) != expected_rows:
        raise ValueError(f"answer has {len(rows)} predictions for {expected_rows} sessions")
    items: list[list[int]] = []
    scores: list[list[float]] = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "items" not in row or "scores" not in row:
            raise ValueError(f"prediction {n} lacks 'items'/'scores': {str(row)[:200]}")
        items.append([int(i) for i in row["items"]])
        scores.append([float(s) for s in row["scores"]])
    return Prediction(items=items, scores=scores, raw=payload)


def response_rows(prediction: Prediction) -> list[Any]:
    """The answer's rows of ``prediction`` (the decoded ones when kept, else items/scores)."""
    raw = prediction.raw
    if isinstance(raw, dict) and isinstance(raw.get("predictions"), list):
        return list(raw["predictions"])
    if isinstance(raw, list):
        return raw
    return [{"items": i, "scores": s}
            for i, s in zip(prediction.items, prediction.scores, strict=True)]
