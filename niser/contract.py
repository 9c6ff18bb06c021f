"""The serving contract's request rules, in the standard library only (no torch, numpy or pandas).

A scoring request is MLflow's JSON body: ``dataframe_records`` (a list of ``{"session": [...]}``)
or ``dataframe_split`` (``{"columns": [..., "session", ...], "data": [[...], ...]}``), and an
optional ``params`` object with ``k`` (default 20). ``parse_request`` returns the sessions and
``k`` or raises ``RequestError`` whose message names the row and the field at fault, and never
echoes more than a few characters of the input. The rules, in one place:

- The body is UTF-8 JSON text (``decode_body``): invalid UTF-8, a byte-order mark (so UTF-16 and
  UTF-32 too), ``NaN``/``Infinity``, integers of more than 4,300 digits, nesting Python's parser
  cannot follow, trailing data and an empty body are refused.
- It is an object holding exactly one of ``dataframe_records`` and ``dataframe_split``, and
  optionally ``params``; any other top-level key is refused (naming the valid ones).
- ``dataframe_records``: a list of objects, each with a ``session`` field. ``dataframe_split``:
  ``columns`` (strings, ``session`` exactly once), ``data`` (one list of ``len(columns)`` values
  per row) and optionally ``index`` (one entry per row). Fields and columns other than
  ``session`` are allowed, ignored, and must hold scalars, so no body is nested deeper than the
  contract needs (``MAX_DEPTH`` levels).
- ``params`` is an object whose only key is ``k``, an integer in ``1..MAX_K``.
- A session is a list of at most ``MAX_SESSION_IDS`` raw item ids (an empty list is a session
  with no known item); a longer session is refused, not cut: the client keeps its last
  ``MAX_SESSION_IDS`` clicks (the model itself looks at its last ``max_positions``). Each id is
  an integer in ``1..MAX_ITEM_ID`` (``true``/``false`` and ``3.0`` are refused: JSON has no
  integer type of its own, a float id is a client bug).
- 1..``MAX_SESSIONS`` sessions per request, at most ``MAX_REQUEST_IDS`` ids in all, and
  sessions x ``k`` at most ``MAX_ANSWER_ITEMS``, so that no answer (each item an id and a score,
  plus the unknown ids echoed back) exceeds the 6 MB response limit of Lambda and SageMaker.

These are the rules of ``niser.pyfunc`` and its scoring-server guard (``niser.serving_guard``),
kept here without pandas, mlflow or torch for the Lambda handler, so both answer the same body
with the same status and message. Unknown ids are not an error: the model drops and reports them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

MAX_K = 1000
MAX_SESSIONS = 10_000
MAX_SESSION_IDS = 1000
MAX_REQUEST_IDS = 50_000
MAX_ANSWER_ITEMS = 100_000
MAX_ITEM_ID = 2**63 - 1
MAX_DEPTH = 5  # body > dataframe_split > data > row > session
DEFAULT_K = 20
TOP_LEVEL_KEYS = ("dataframe_records", "dataframe_split", "params")
PARAM_KEYS = ("k",)
SPLIT_KEYS = ("columns", "data", "index")
_SCALAR = (str, int, float, bool, type(None))


class RequestError(ValueError):
    """A request broke the serving contract; the message names row and field."""


def _clip(value: Any, width: int = 24) -> str:
    """The start of ``value``'s repr: enough to find it, never the whole input."""
    text = repr(value)
    return f"{text[:width]}{'...' if len(text) > width else ''}"


def _short(value: Any, width: int = 40) -> str:
    """``value``'s type and the start of its repr."""
    return f"{type(value).__name__} {_clip(value, width)}"


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"the body holds {name}, which is not JSON; item ids and k are integers")


def decode_body(body: bytes | bytearray | memoryview | str) -> Any:
    """The JSON value of a request body, by the rules of the module docstring."""
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"the body is not UTF-8 text: byte {raw[exc.start]:#04x} at offset {exc.start}"
                " cannot be decoded; send JSON encoded as UTF-8") from None
    else:
        text = body
    if text.startswith("\ufeff"):
        raise RequestError("the body starts with a byte-order mark; send UTF-8 JSON without one")
    if not text.strip():
        raise RequestError('the body is empty; send a JSON object such as {"dataframe_records":'
                           ' [{"session": [1234, 5678]}]}')
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(f"the body is nested too deeply to parse; the contract needs at most"
                           f" {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column"
                           f" {exc.colno} (character {exc.pos})") from None
    except RequestError:
        raise
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise RequestError("the body holds a number of more than 4300 digits; item ids have at"
                           f" most {len(str(MAX_ITEM_ID))} digits and k at most"
                           f" {len(str(MAX_K))}") from None


def session_ids(row: int, value: Any) -> list[int]:
    """One row's ``session``: a list (or other sequence) of at most ``MAX_SESSION_IDS`` integer
    item ids in 1..MAX_ITEM_ID."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise RequestError(
            f"row {row}, field 'session': expected a list of item ids such as [1234, 5678], "
            f"got {_short(value)}")
    if len(value) > MAX_SESSION_IDS:
        raise RequestError(
            f"row {row}, field 'session': {len(value)} item ids, more than the {MAX_SESSION_IDS}"
            f" allowed per session; send its last {MAX_SESSION_IDS} clicks")
    if all(type(item) is int for item in value) \
            and (not value or (min(value) >= 1 and max(value) <= MAX_ITEM_ID)):
        return list(value)  # the common case, checked at C speed; the loop below explains
    out: list[int] = []
    for pos, item in enumerate(value):
        if isinstance(item, bool) or type(item).__name__ == "bool_" \
                or not isinstance(item, Integral):
            raise RequestError(
                f"row {row}, field 'session', position {pos}: item id must be an integer "
                f"(no quotes, no decimal point), got {_short(item)}")
        item = int(item)
        if not 1 <= item <= MAX_ITEM_ID:
            raise RequestError(
                f"row {row}, field 'session', position {pos}: item id {_clip(item)} is"
                f" not a positive integer (1..{MAX_ITEM_ID})")
        out.append(item)
    return out


def parse_k(params: Any) -> int:
    """``k`` from the request's ``params`` (absent or null -> ``DEFAULT_K``); no other key."""
    if params is None:
        return DEFAULT_K
    if not isinstance(params, Mapping):
        raise RequestError(f"field 'params': expected an object such as {{\"k\": {DEFAULT_K}}},"
                           f" got {_short(params)}")
    unknown = sorted(str(key) for key in params if key not in PARAM_KEYS)
    if unknown:
        raise RequestError(f"field 'params': unknown key {unknown[0][:40]!r}; the valid keys are"
                           f" {list(PARAM_KEYS)}")
    k = params.get("k")
    if k is None:
        return DEFAULT_K
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(f"param 'k': expected an integer in 1..{MAX_K}, got {_short(k)}")
    if not 1 <= k <= MAX_K:
        raise RequestError(f"param 'k': {_clip(k)} is outside 1..{MAX_K}; pass an integer k"
                           f" between 1 and {MAX_K}")
    return k


def _scalar_fields(row: int, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        if not isinstance(value, _SCALAR):
            raise RequestError(f"row {row}, field {str(name)[:40]!r}: fields other than 'session'"
                               f" are ignored and must hold a scalar, got {_short(value)}")


def _records(records: Any) -> list[Any]:
    if not isinstance(records, list):
        raise RequestError('field \'dataframe_records\': expected a list of {"session": [...]}'
                           f" objects, got {_short(records)}")
    rows: list[Any] = []
    for row, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise RequestError(f"row {row}: expected an object with a 'session' field, "
                               f"got {_short(rec)}")
        if "session" not in rec:
            raise RequestError(f"row {row}, field 'session': missing; every row needs a 'session'"
                               f" list of raw item ids (got keys {sorted(map(str, rec))[:5]})")
        _scalar_fields(row, {k: v for k, v in rec.items() if k != "session"})
        rows.append(rec["session"])
    return rows


def _split(split: Any) -> list[Any]:
    shape = ('expected {"columns": ["session"], "data": [[[1234, 5678]], ...]} with a'
             " 'session' column")
    if not isinstance(split, Mapping):
        raise RequestError(f"field 'dataframe_split': {shape}, got {_short(split)}")
    unknown = sorted(str(key) for key in split if key not in SPLIT_KEYS)
    if unknown:
        raise RequestError(f"field 'dataframe_split': unknown key {unknown[0][:40]!r}; the valid"
                           f" keys are {list(SPLIT_KEYS)}")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(f"field 'dataframe_split.columns': {shape}, got {_short(columns)}")
    if columns.count("session") != 1:
        raise RequestError(f"field 'dataframe_split.columns': 'session' must appear exactly once,"
                           f" it appears {columns.count('session')} times")
    if not isinstance(data, list):
        raise RequestError(f"field 'dataframe_split.data': {shape}, got {_short(data)}")
    index = split.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        got = f"{len(index)} entries" if isinstance(index, list) else _short(index)
        raise RequestError(f"field 'dataframe_split.index': expected one entry per row of"
                           f" 'data' ({len(data)}), got {got}")
    col = columns.index("session")
    rows = []
    for row, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(columns):
            raise RequestError(f"row {row}: expected {len(columns)} values (one per column of"
                               f" {columns[:5]}), got {_short(values)}")
        _scalar_fields(row, {c: v for i, (c, v) in enumerate(zip(columns, values, strict=True))
                             if i != col})
        rows.append(values[col])
    return rows


def check_sizes(sessions: Sequence[Sequence[int]], k: int) -> None:
    """The request-wide caps: ids in all (``MAX_REQUEST_IDS``) and sessions x k
    (``MAX_ANSWER_ITEMS``), each message naming both numbers."""
    ids = sum(len(s) for s in sessions)
    if ids > MAX_REQUEST_IDS:
        raise RequestError(f"the request holds {ids} item ids in {len(sessions)} sessions, more"
                           f" than the {MAX_REQUEST_IDS} allowed; split it into smaller requests")
    if len(sessions) * k > MAX_ANSWER_ITEMS:
        raise RequestError(
            f"{len(sessions)} sessions x k={k} asks for {len(sessions) * k} recommendations, more"
            f" than the {MAX_ANSWER_ITEMS} one answer may hold (answers stop at 6 MB); send at"
            f" most {max(1, MAX_ANSWER_ITEMS // k)} sessions per request at k={k}, or a lower k")


def parse_sessions(body: Mapping[str, Any]) -> list[list[int]]:
    """The sessions of a ``dataframe_records`` or ``dataframe_split`` body."""
    if "dataframe_records" not in body and "dataframe_split" not in body:
        raise RequestError("the body needs 'dataframe_records' or 'dataframe_split' with a "
                           f"'session' column; got keys {sorted(str(k)[:40] for k in body)[:5]}")
    unknown = sorted(str(key) for key in body if key not in TOP_LEVEL_KEYS)
    if unknown:
        raise RequestError(f"unknown top-level key {unknown[0][:40]!r}; the valid keys are"
                           f" {list(TOP_LEVEL_KEYS)}")
    if "dataframe_records" in body and "dataframe_split" in body:
        raise RequestError("the body holds both 'dataframe_records' and 'dataframe_split'; send"
                           " one of them")
    if "dataframe_records" in body:
        rows = _records(body["dataframe_records"])
    else:
        rows = _split(body["dataframe_split"])
    if not rows:
        raise RequestError("row 0, field 'session': the request holds no sessions; send at "
                           "least one row with a 'session' list of raw item ids")
    if len(rows) > MAX_SESSIONS:
        raise RequestError(f"row {MAX_SESSIONS}, field 'session': the request holds {len(rows)}"
                           f" sessions, more than the {MAX_SESSIONS} allowed; split it into"
                           f" requests of at most {MAX_SESSIONS} rows")
    return [session_ids(row, value) for row, value in enumerate(rows)]


def parse_request(body: str | bytes | Mapping[str, Any] | Any) -> tuple[list[list[int]], int]:
    """Sessions and ``k`` of a scoring request (JSON text or an already-decoded value)."""
    if isinstance(body, str | bytes | bytearray | memoryview):
        body = decode_body(body)
    if not isinstance(body, Mapping):
        raise RequestError(f"the body must be a JSON object such as {{\"dataframe_records\":"
                           f" [{{\"session\": [1234]}}]}}, got {_short(body, 20)}")
    sessions = parse_sessions(body)
    k = parse_k(body.get("params"))
    check_sizes(sessions, k)
    return sessions, k


def is_gateway_event(event: Any) -> bool:
    """Whether a Lambda event is API-Gateway-style (a dict with ``body`` or
    ``isBase64Encoded``), whose answer is wrapped as ``{"statusCode", "headers", "body"}``."""
    return isinstance(event, dict) and ("body" in event or "isBase64Encoded" in event)


def event_request(event: Any) -> Any:
    """The scoring request of a Lambda ``event``: the event itself, or the decoded ``body`` of an
    API-Gateway-style event (``is_gateway_event``: a string, base64 when ``isBase64Encoded`` is
    true; null is an empty body); ``RequestError`` naming the field when it is malformed."""
    if not is_gateway_event(event):
        return event
    encoded = event.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise RequestError(f"field 'isBase64Encoded': expected true or false, got "
                           f"{type(encoded).__name__} {str(encoded)[:20]!r}")
    body = event.get("body")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise RequestError(f"field 'body': expected the request as a string, got "
                           f"{type(body).__name__}")
    if not encoded:
        return decode_body(body)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("field 'body': isBase64Encoded is true but the body is not valid "
                           "base64") from None
    return decode_body(raw)
