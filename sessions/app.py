"""The session server's HTTP API (Starlette, the ASGI stack under MLflow's and Prefect's servers).

``POST /sessions/{session_id}/clicks?k=20`` with ``{"item": 1234}``::

    200 {"session_id": "s1", "clicks": [55, 1234], "items": [...], "scores": [...],
         "unknown_items": [], "fallback": false}
    Server-Timing: store;dur=0.21, endpoint;dur=4.80, total;dur=5.30

(``store``: reading the request and the store's append; ``endpoint``: the deployment's invoker
call, timed on the thread that makes it; ``total``: the whole handler, ms)

appends the click and answers the top ``k`` for the session so far (the clicks the model saw:
the session's newest ``max_clicks``). ``unknown_items`` and ``fallback`` are the deployment's own
report (an item the model does not know is kept in the session and reported, not refused).
``GET /sessions/{session_id}`` answers the clicks, ``last_click_at`` and ``expires_at`` (unix
seconds); ``DELETE`` ends the session (204). ``GET /health`` names the deployment and the store.

Errors are ``{"error": "<what was wrong, with the value>", "field": "<name>"}``:

- 400 a session id outside ``[A-Za-z0-9_.:-]{1,128}``, a body that is not a JSON object, or an
  ``item`` that is not an integer in 1..2**63-1; 400 ``k`` outside 1..1000; 404 an unknown (or
  expired) session; 413 a body over ``max_body_bytes``; 415 a body that is not
  ``application/json``.
- 502 the deployment answered an error or could not be reached; 504 it did not answer within
  ``endpoint_timeout_s``. The click is kept either way (the answer says so), and the server
  keeps serving.

Store calls run in the order requests arrived: on the event loop for a store that says they are
quick (``inline``: SQLite, ~0.1 ms), else on one thread of their own (Redis); endpoint calls on a
pool of ``endpoint_threads`` (the deployers' invokers are blocking and thread-safe).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployers import wire
from deployers.base import InvocationError, Invoker, Prediction
from niser.contract import DEFAULT_K, MAX_ITEM_ID, MAX_K
from sessions.store import Session, SessionStore

SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_BODY_BYTES = 1024
MAX_REASON_CHARS = 300
T = TypeVar("T")


class BadRequest(Exception):
    """A request the API refuses: status, the field at fault and a sentence naming the value."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def check_session_id(value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        raise BadRequest(400, "session_id", f"session_id {value[:40]!r} must be 1-128 letters, "
                         "digits or _ . : - (e.g. a cookie value)")
    return value


def parse_k(value: str | None) -> int:
    if value is None:
        return DEFAULT_K
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= MAX_K:
        raise BadRequest(400, "k", f"k must be an integer in 1..{MAX_K}, got {value[:20]!r}")
    return int(value)


def parse_item(body: bytes) -> int:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "body", 'body is not JSON: send {"item": 1234}') from None
    if not isinstance(payload, dict) or "item" not in payload:
        raise BadRequest(400, "item", 'body must be an object with an "item" field, e.g. '
                         '{"item": 1234}')
    item = payload["item"]
    if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_ITEM_ID:
        raise BadRequest(400, "item", f"item must be an integer in 1..{MAX_ITEM_ID} (no quotes, "
                         f"no decimal point), got {json.dumps(item)[:40]}")
    return item


async def read_body(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, "content-type", f"Content-Type must be application/json, "
                         f"got {ctype[:60]!r}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(413, "body", f"body of {declared[:20]} bytes is over the {limit}-byte "
                         "limit of a click")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, "body", f"body is over the {limit}-byte limit of a click")
    return body


def _error(status: int, field: str | None, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, **extra}, status_code=status)


def _timing(**parts: float) -> str:
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in parts.items())


def _session_json(s: Session) -> dict[str, Any]:
    return {"session_id": s.session_id, "clicks": s.clicks, "last_click_at": s.last_click_at,
            "expires_at": s.expires_at}


def create_app(invoker: Invoker, store: SessionStore, *, deployer: str, deployment: str,
               endpoint_timeout_s: float = 10.0, endpoint_threads: int = 64,
               max_body_bytes: int = MAX_BODY_BYTES,
               on_shutdown: Callable[[], None] | None = None) -> Starlette:
    """The session server in front of ``invoker`` (a deployment's), keeping sessions in
    ``store``. ``on_shutdown`` runs once the server stops (e.g. closing the invoker)."""
    if not endpoint_timeout_s > 0:
        raise ValueError(f"endpoint_timeout_s must be > 0, got {endpoint_timeout_s!r}")
    store_pool = ThreadPoolExecutor(1, thread_name_prefix="session-store")
    endpoint_pool = ThreadPoolExecutor(endpoint_threads, thread_name_prefix="session-endpoint")

    async def on(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        if pool is store_pool and store.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def timed(sessions: list[list[int]], k: int) -> tuple[Prediction, float]:
        """The invoker's call and its duration in ms, timed on the thread that makes it (the
        hand-over to that thread counts as the session manager's, not the endpoint's)."""
        start = time.perf_counter()
        prediction = invoker(sessions, k)
        return prediction, (time.perf_counter() - start) * 1e3

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "deployer": deployer, "deployment": deployment,
                             "store": store.kind})

    async def click(request: Request) -> Response:
        t0 = time.perf_counter()
        sid = check_session_id(request.path_params["session_id"])
        k = parse_k(request.query_params.get("k"))
        item = parse_item(await read_body(request, max_body_bytes))
        session = await on(store_pool, store.append, sid, item)
        t1 = time.perf_counter()
        try:
            prediction, endpoint_ms = await asyncio.wait_for(
                on(endpoint_pool, timed, [session.clicks], k), endpoint_timeout_s)
        except TimeoutError:
            return _error(504, None, f"the deployment {deployer}/{deployment} did not answer "
                          f"within {endpoint_timeout_s:g} s; the click was kept",
                          clicks=session.clicks)
        except InvocationError as exc:
            timed_out = isinstance(exc.__cause__, TimeoutError)
            return _error(504 if timed_out else 502, None,
                          f"the deployment {deployer}/{deployment} failed: "
                          f"{str(exc)[:MAX_REASON_CHARS]}; the click was kept",
                          clicks=session.clicks)
        row = wire.response_rows(prediction)[0]
        answer = {"session_id": sid, "clicks": session.clicks, "items": prediction.items[0],
                  "scores": prediction.scores[0],
                  "unknown_items": list(row.get("unknown_items", [])) if isinstance(row, dict)
                  else [], "fallback": bool(row.get("fallback", False))
                  if isinstance(row, dict) else False}
        timing = _timing(store=(t1 - t0) * 1e3, endpoint=endpoint_ms,
                         total=(time.perf_counter() - t0) * 1e3)
        return JSONResponse(answer, headers={"Server-Timing": timing})

    async def get_session(request: Request) -> Response:
        sid = check_session_id(request.path_params["session_id"])
        session = await on(store_pool, store.get, sid)
        if session is None:
            return _error(404, "session_id", f"no session {sid!r} (never clicked, ended, or "
                          f"expired {store.ttl_s:g} s after its last click)")
        return JSONResponse(_session_json(session))

    async def delete_session(request: Request) -> Response:
        sid = check_session_id(request.path_params["session_id"])
        if not await on(store_pool, store.delete, sid):
            return _error(404, "session_id", f"no session {sid!r} to end")
        return Response(status_code=204)

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return _error(exc.status, exc.field, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, None, f"{request.method} {request.url.path}: {exc.detail}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        endpoint_pool.shutdown(wait=False, cancel_futures=True)
        store_pool.shutdown(wait=True)
        store.close()
        if on_shutdown is not None:
            on_shutdown()

    return Starlette(
        routes=[Route("/health", health, methods=["GET"]),
                Route("/sessions/{session_id}/clicks", click, methods=["POST"]),
                Route("/sessions/{session_id}", get_session, methods=["GET"]),
                Route("/sessions/{session_id}", delete_session, methods=["DELETE"])],
        exception_handlers={BadRequest: bad_request, HTTPException: http_error},
        lifespan=lifespan,
    )
