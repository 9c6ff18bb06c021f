"""The serving contract's request rules, in the standard library only (no torch, numpy or pandas).

A scoring request is MLflow's JSON body: ``dataframe_records`` (a list of ``{"session": [...]}``)
or ``dataframe_split`` (``{"columns": [..., "session", ...], "data": [[...], ...]}``), and an
optional ``params`` object with ``k`` (default 20). ``parse_request`` returns the sessions and
``k`` or raises ``RequestError`` whose message names the row and the field at fault:

- a session is a list of raw item ids (an empty list is a session with no known item); each id
  is an integer in ``1..MAX_ITEM_ID`` (``true``/``false`` and ``3.0`` are refused: JSON has no
  integer type of its own, a float id is a client bug);
- ``k`` is an integer in ``1..MAX_K``;
- 1..``MAX_SESSIONS`` sessions per request.

These are the rules of ``niser.pyfunc`` (the MLflow scoring server), kept here without pandas,
mlflow or torch for the Lambda handler. Unknown ids are not an error: the model drops and
reports them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

MAX_K = 1000
MAX_SESSIONS = 10_000
MAX_ITEM_ID = 2**63 - 1
DEFAULT_K = 20


class RequestError(ValueError):
    """A request broke the serving contract; the message names row and field."""


def session_ids(row: int, value: Any) -> list[int]:
    """One row's ``session``: a list (or other sequence) of integer item ids in 1..MAX_ITEM_ID."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise RequestError(
            f"row {row}, field 'session': expected a list of item ids such as [1234, 5678], "
            f"got {type(value).__name__} {value!r:.60}")
    out: list[int] = []
    for pos, item in enumerate(value):
        if isinstance(item, bool) or type(item).__name__ == "bool_" \
                or not isinstance(item, Integral):
            raise RequestError(
                f"row {row}, field 'session', position {pos}: item id must be an integer "
                f"(no quotes, no decimal point), got {type(item).__name__} {item!r:.40}")
        item = int(item)
        if not 1 <= item <= MAX_ITEM_ID:
            raise RequestError(
                f"row {row}, field 'session', position {pos}: item id {item} is not a positive "
                f"integer (1..{MAX_ITEM_ID})")
        out.append(item)
    return out


def parse_k(params: Any) -> int:
    """``k`` from the request's ``params`` (absent -> ``DEFAULT_K``)."""
    if params is None:
        return DEFAULT_K
    if not isinstance(params, Mapping):
        raise RequestError(f"field 'params': expected an object, got {type(params).__name__}")
    k = params.get("k")
    if k is None:
        return DEFAULT_K
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(f"field 'params.k': expected an integer in 1..{MAX_K}, got {k!r:.40}")
    if not 1 <= k <= MAX_K:
        raise RequestError(f"field 'params.k': {k} is outside 1..{MAX_K}")
    return k


def parse_sessions(body: Mapping[str, Any]) -> list[list[int]]:
    """The sessions of a ``dataframe_records`` or ``dataframe_split`` body."""
    if "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list):
            raise RequestError("field 'dataframe_records': expected a list of "
                               '{"session": [...]} objects')
        rows: list[Any] = []
        for row, rec in enumerate(records):
            if not isinstance(rec, Mapping) or "session" not in rec:
                raise RequestError(f"row {row}: expected an object with a 'session' field, "
                                   f"got {rec!r:.60}")
            rows.append(rec["session"])
    elif "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, Mapping) or not isinstance(split.get("columns"), list) \
                or "session" not in split["columns"] or not isinstance(split.get("data"), list):
            raise RequestError("field 'dataframe_split': expected {\"columns\": [\"session\"], "
                               "\"data\": [[[...]], ...]} with a 'session' column")
        col = split["columns"].index("session")
        rows = []
        for row, values in enumerate(split["data"]):
            if not isinstance(values, list) or len(values) != len(split["columns"]):
                raise RequestError(f"row {row}: expected {len(split['columns'])} values "
                                   f"(columns {split['columns']}), got {values!r:.60}")
            rows.append(values[col])
    else:
        raise RequestError("the body needs 'dataframe_records' or 'dataframe_split' with a "
                           f"'session' column; got keys {sorted(body)}")
    if not rows:
        raise RequestError("row 0, field 'session': the request holds no sessions; send at "
                           "least one row with a 'session' list of raw item ids")
    if len(rows) > MAX_SESSIONS:
        raise RequestError(f"{len(rows)} sessions in one request; the limit is {MAX_SESSIONS}: "
                           "split the request")
    return [session_ids(row, value) for row, value in enumerate(rows)]


def parse_request(body: str | bytes | Mapping[str, Any]) -> tuple[list[list[int]], int]:
    """Sessions and ``k`` of a scoring request (JSON text or already-decoded object)."""
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, Mapping):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    return parse_sessions(body), parse_k(body.get("params"))
