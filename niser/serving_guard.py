"""The serving contract's rules at the door of MLflow's scoring server, for the NISER model only.

MLflow's scoring server (``mlflow models serve``, and the same code in MLflow's SageMaker
container) parses the body itself before the model sees it. Left alone it answers a missing
Content-Type and nesting Python's parser cannot follow with 500s, echoes a malformed body back
inside its 400, appends stack traces to its error bodies, and turns an oversized integer into a
500. ``install`` wraps the server's ``invocations`` function (the one its ``/invocations`` route
calls on every request) so that, in a scoring-server process that serves this model:

- the Content-Type must be ``application/json`` (any case, optionally ``; charset=utf-8``); any
  other, or none, is a 415 whose message names the accepted type;
- the body is decoded and checked by ``niser.contract.parse_request`` (the Lambda handler's
  rules too, so both give the same status and message); a breach is a 400 with the contract's
  message, and nothing of MLflow's parsing runs;
- a sound body is handed on already decoded (MLflow accepts a decoded object, so it is parsed
  once); any error MLflow or the model raises after that is answered with its own status and
  message, without the stack trace or the echoed input MLflow adds, and an unexpected exception
  is a 500 whose message names its type only (the traceback goes to the server's log);
- every error body is ``{"error_code": ..., "message": ...}``, at most ``MAX_ERROR_BYTES``;
- on the lean path (``install(lean=True)``: ``NISER_REQUEST_PATH=lean``, the default), a sound
  request is answered by the ``answer`` of the model the server passes (``answer_of``):
  ``{"predictions": rows}`` written as MLflow's ``predictions_to_json`` writes the same rows,
  with its encoder, without MLflow's DataFrame, schema enforcement and pyfunc wrapping, which
  re-check what the contract has just checked (its rules are the signature's, and stricter).
  A model that fails is answered as MLflow's path answers it (a 400 with MLflow's message for
  an exception not MLflow's). The same bytes either way, tested. ``NISER_REQUEST_PATH=mlflow``
  hands every request to MLflow's path instead, as before.

It installs only in a process started as MLflow's scoring server (``__pyfunc_model_path__`` set,
``mlflow.pyfunc.scoring_server`` imported), so loading the model elsewhere changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.utils.proto_json_utils import NumpyEncoder

from niser import contract

ACCEPTED_TYPE = "application/json"
MAX_ERROR_BYTES = 4096
_MAX_MESSAGE = 600  # x 6 for \u escapes, still under MAX_ERROR_BYTES
# the front door's rule (deployers.frontdoor), which a test holds this one to
_JSON_TYPE = re.compile(r'^[ \t]*application/json[ \t]*(;[ \t]*charset[ \t]*=[ \t]*"?utf-8"?[ \t]*)?$',
                        re.I)
_SERVER_MODULE = "mlflow.pyfunc.scoring_server"
_MODEL_PATH_VAR = "__pyfunc_model_path__"
_ECHO = re.compile(r"^Failed to predict data '.*'\. \nError: ", re.S)
_log = logging.getLogger(__name__)
# what MLflow's ``invocations`` answers (400) when the model raises something not MLflow's
_UNEXPECTED = ("Encountered an unexpected error while evaluating the model. Verify that the "
               "serialized input Dataframe is compatible with the model for inference.")
ENV_REQUEST_PATH = "NISER_REQUEST_PATH"
REQUEST_PATHS = ("lean", "mlflow")
Answer = Callable[[list[list[int]], int], list[dict[str, Any]]]  # checked sessions, k -> rows


def lean_path(environ: Mapping[str, str]) -> bool:
    """Whether ``NISER_REQUEST_PATH`` (default ``lean``) asks for the lean request path;
    ``ValueError`` naming the variable and the value otherwise."""
    value = environ.get(ENV_REQUEST_PATH, "lean").strip().lower()
    if value not in REQUEST_PATHS:
        raise ValueError(f"{ENV_REQUEST_PATH}={environ[ENV_REQUEST_PATH]!r}: expected one of "
                         f"{', '.join(REQUEST_PATHS)}")
    return value == "lean"


def content_type_problem(content_type: str | None) -> str | None:
    """Why ``content_type`` is refused (None when it is accepted)."""
    if content_type is not None and _JSON_TYPE.match(content_type):
        return None
    got = "no Content-Type" if not content_type else f"Content-Type {content_type[:60]!r}"
    return (f"the scoring server accepts Content-Type {ACCEPTED_TYPE} (optionally with "
            f"charset=utf-8) only; got {got}")


def error_body(error_code: str, message: str) -> str:
    """A short JSON error body: the code and the message, cut to fit ``MAX_ERROR_BYTES``."""
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ..."
    return json.dumps({"error_code": error_code, "message": message})


def _clean(message: str) -> str:
    """MLflow's message without the input it echoes in front of the model's own message."""
    return _ECHO.sub("", message, count=1)


def answer_of(model: Any) -> Answer | None:
    """The lean path's ``answer`` of the model the server passes (a ``PyFuncModel`` of this
    pyfunc), or None when it has none."""
    unwrap = getattr(model, "unwrap_python_model", None)
    try:
        python_model = unwrap() if unwrap is not None else None
    except Exception:  # not a Python-function model: MLflow's path
        return None
    found = getattr(python_model, "answer", None)
    return found if callable(found) else None


def guarded(original: Callable[..., Any], response: Callable[..., Any],
            lean: bool = False) -> Callable[..., Any]:
    """``original`` (MLflow's ``invocations(data, content_type, model, input_schema)``) behind
    the rules of the module docstring; ``response(body, status, mimetype)`` builds its answer;
    ``lean``: the request's model answers sound requests itself (``answer_of``)."""

    def fail(status: int, code: str, message: str) -> Any:
        return response(error_body(code, message), status, ACCEPTED_TYPE)

    def invocations(data: Any, content_type: str | None, model: Any, input_schema: Any) -> Any:
        problem = content_type_problem(content_type)
        if problem is not None:
            return fail(415, "UNSUPPORTED_MEDIA_TYPE", problem)
        try:
            body = contract.decode_body(data) if isinstance(data, bytes | str) else data
            sessions, k = contract.parse_request(body)
        except contract.RequestError as exc:
            return fail(400, "BAD_REQUEST", str(exc))
        answer = answer_of(model) if lean else None
        try:
            if answer is not None:
                return response(_predictions_json(_lean(answer, sessions, k)), 200,
                                ACCEPTED_TYPE)
            out = original(body, ACCEPTED_TYPE, model, input_schema)
        except Exception as exc:
            get_status = getattr(exc, "get_http_status_code", None)
            if get_status is None:
                _log.exception("the model failed on a request")
                return fail(500, "INTERNAL_ERROR", f"the model failed on this request"
                            f" ({type(exc).__name__}); the server's log has the details")
            code = str(getattr(exc, "error_code", "BAD_REQUEST"))
            return fail(int(get_status()), code, _clean(str(getattr(exc, "message", exc))))
        if int(out.status) >= 400 and (len(str(out.response)) > MAX_ERROR_BYTES
                                       or out.mimetype != ACCEPTED_TYPE):
            return fail(int(out.status), "BAD_REQUEST", str(out.response))
        return out

    invocations.niser_guard = original  # type: ignore[attr-defined]
    invocations.niser_lean = lean  # type: ignore[attr-defined]
    return invocations


def _lean(answer: Answer, sessions: list[list[int]], k: int) -> list[dict[str, Any]]:
    """``answer``'s rows; an exception other than MLflow's is raised as MLflow's path raises
    it (its ``invocations`` turns it into a 400 with this message), so both paths answer a
    failing model alike."""
    try:
        return answer(sessions, k)
    except MlflowException:
        raise
    except Exception:
        _log.exception("the model failed on a request")
        raise MlflowException(_UNEXPECTED, error_code=BAD_REQUEST) from None


def _predictions_json(rows: list[dict[str, Any]]) -> str:
    """``{"predictions": rows}`` as MLflow's ``predictions_to_json`` writes it."""
    return json.dumps({"predictions": rows}, cls=NumpyEncoder)


def install(lean: bool = False) -> bool:
    """Wrap the scoring server's ``invocations`` when this process is one (once: a later call
    wraps MLflow's function again, with its own ``lean``); True if installed."""
    server = sys.modules.get(_SERVER_MODULE)
    if server is None or not os.environ.get(_MODEL_PATH_VAR):
        return False
    current = getattr(server, "invocations", None)
    response = getattr(server, "InvocationsResponse", None)
    if current is None or response is None:
        _log.warning("%s has no invocations/InvocationsResponse: requests are not guarded",
                     _SERVER_MODULE)
        return False
    original = getattr(current, "niser_guard", None) or current
    server.invocations = guarded(original, response, lean)  # type: ignore[attr-defined]
    return True
