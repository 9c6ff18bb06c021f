"""A local AWS Lambda service: the Invoke API in front, the Runtime API behind, real processes.

``LocalLambda`` serves, on 127.0.0.1 at a port chosen at run time, the data-plane Invoke API as
boto3 ``lambda.invoke`` sends it (``POST /2015-03-31/functions/{name}/invocations``; build the
client with ``endpoint_url=LocalLambda.url``). Each execution environment is a real
``python -m awslambdaric <handler>`` process, the runtime client AWS ships, talking to its own
Runtime API server (``GET /2018-06-01/runtime/invocation/next``, ``POST .../{id}/response``,
``.../{id}/error``, ``/2018-06-01/runtime/init/error``) at ``AWS_LAMBDA_RUNTIME_API``.

Promises, as Lambda keeps them:

- One request at a time per environment. An invoke takes an idle environment; when none is
  idle it starts a new one (a cold start: process start + handler import = Init), up to the
  function's concurrency limit (reserved concurrency, else the account limit). Beyond it the
  answer is 429 ``TooManyRequestsException`` at once.
- Provisioned concurrency: that many environments are started and initialised when the
  function is added; their invocations report no Init Duration.
- The function timeout ends the environment (its process group is killed) and the invoke
  answers ``X-Amz-Function-Error: Unhandled`` with ``Task timed out after X seconds``. Init has
  Lambda's own 10 s limit. A failing Init (``/init/error``) or a runtime that exits is
  reported the same way with Lambda's error types, and the environment is discarded.
- Each invoke appends a ``REPORT`` line (Duration, Billed Duration, Memory Size, Max Memory
  Used, Init Duration on cold starts) to the environment's log; with ``LogType='Tail'`` the
  last 4 KB come back base64-encoded in ``X-Amz-Log-Result``. ``reports`` keeps every
  ``Report`` for in-process readers. Billed Duration includes Init for on-demand cold starts
  (Lambda bills INIT since 2025-08-01) and is rounded up to 1 ms.
- Isolation: an environment sees only the package directory (first on ``sys.path``, and its
  working directory) and a runtime directory holding the runtime client: the interpreter runs
  with ``-S``, so the venv's site-packages are invisible, as on Lambda. Its environment
  variables are Lambda's (no credentials: nothing here has a role to pass on).

Not reproduced: memory size is passed to the function (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) and
reported, but neither enforced nor turned into a CPU share proportional to memory (Lambda gives
1 vCPU per 1,769 MB); every environment shares this machine's cores. Versions and aliases
run the same package (the runtime hosts one package per function).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from deployers.standins.lambda_environment import (
    ACCOUNT,
    INIT_TIMEOUT_S,
    Environment,
    FunctionConfig,
    Invocation,
    QuietServer,
    runtime_dir,
)

LOG_TAIL_BYTES = 4096
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

__all__ = ["FunctionConfig", "LocalLambda", "Report", "Result", "Throttled"]


@dataclass(frozen=True)
class Report:
    """What Lambda's REPORT line says about one invocation."""

    request_id: str
    function: str
    environment: int
    status: str  # success | error | timeout | init_error | exit
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_mb: int
    init_ms: float | None  # set on the cold start of an on-demand environment

    def line(self) -> str:
        text = (f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms\t"
                f"Billed Duration: {self.billed_ms} ms\tMemory Size: {self.memory_mb} MB\t"
                f"Max Memory Used: {self.max_memory_mb} MB\t")
        if self.init_ms is not None:
            text += f"Init Duration: {self.init_ms:.2f} ms\t"
        return text + ("" if self.status == "success" else f"Status: {self.status}")


@dataclass
class Result:
    """One invoke's answer as the Invoke API returns it."""

    payload: bytes
    function_error: str | None
    log: str
    report: Report
    executed_version: str


class Throttled(Exception):
    """No environment is free and the concurrency limit is reached."""


class _Function:
    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.envs: list[Environment] = []
        self.busy: set[int] = set()


class LocalLambda:
    """Hosts functions in real runtime-client processes; serves the Invoke API at ``url``."""

    def __init__(self, account_concurrency: int = 1000) -> None:
        self.account_concurrency = account_concurrency
        self.reports: list[Report] = []
        self._functions: dict[str, _Function] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="niser-lambda-runtime-"))
        self._runtime_dir = runtime_dir(self._tmp / "runtime")
        self._server = QuietServer(("127.0.0.1", 0), _invoke_api(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_function(self, config: FunctionConfig) -> None:
        """Host ``config`` (replacing a function of that name); blocks until its provisioned
        environments have finished Init. ``RuntimeError`` if one of them fails."""
        limit = self._limit(config)
        if config.provisioned_concurrency > limit:
            raise ValueError(f"provisioned_concurrency={config.provisioned_concurrency} exceeds "
                             f"the function's concurrency limit {limit}")
        self.remove_function(config.name)
        fn = _Function(config)
        self._functions[config.name] = fn
        fn.envs = [Environment(config, self._runtime_dir, True)
                   for _ in range(config.provisioned_concurrency)]
        for env in fn.envs:
            if not self._wait_init(env):
                log = "\n".join(env.log[-20:])
                self.remove_function(config.name)
                raise RuntimeError(f"a provisioned environment of {config.name!r} failed Init: "
                                   f"{(env.init_error or b'').decode()}\n{log}")

    def remove_function(self, name: str) -> None:
        """Stop every environment of ``name``; absent is not an error."""
        fn = self._functions.pop(name, None)
        if fn is not None:
            for env in fn.envs:
                env.kill()

    def functions(self) -> list[str]:
        return sorted(self._functions)

    def environments(self, name: str) -> int:
        """Live environments of function ``name``."""
        return len(self._functions[name].envs)

    def close(self) -> None:
        """Stop every environment and the Invoke API server."""
        for name in list(self._functions):
            self.remove_function(name)
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalLambda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _limit(self, config: FunctionConfig) -> int:
        if config.reserved_concurrency is not None:
            return config.reserved_concurrency
        return self.account_concurrency

    @staticmethod
    def _wait_init(env: Environment) -> bool:
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while time.monotonic() < deadline:
            if env.ready.wait(0.01):
                return True
            if env.ended.is_set():
                return False
        return False

    def _acquire(self, fn: _Function) -> tuple[Environment, bool]:
        with fn.lock:
            for env in fn.envs:
                if env.id not in fn.busy and not env.ended.is_set():
                    fn.busy.add(env.id)
                    return env, False
            if len(fn.envs) >= self._limit(fn.config):
                raise Throttled(fn.config.name)
            env = Environment(fn.config, self._runtime_dir, False)
            fn.envs.append(env)
            fn.busy.add(env.id)
            return env, True

    def _release(self, fn: _Function, env: Environment, discard: bool) -> None:
        if discard:
            env.kill()
        with fn.lock:
            fn.busy.discard(env.id)
            if discard and env in fn.envs:
                fn.envs.remove(env)

    def invoke(self, name: str, payload: bytes, qualifier: str | None = None) -> Result:
        """Run one invocation; ``KeyError`` if no such function, ``Throttled`` past the limit."""
        fn = self._functions[name]
        cfg = fn.config
        version = cfg.aliases.get(qualifier or "", qualifier or "$LATEST")
        env, cold = self._acquire(fn)
        inv = Invocation(payload, cfg)
        first_line = len(env.log)
        status, discard = "success", False
        if not self._wait_init(env):
            status, discard = "init_error", True
            inv.error_type = "Runtime.Unknown"
            inv.body = env.init_error or json.dumps({
                "errorType": "Sandbox.Timedout" if not env.ended.is_set() else "Runtime.ExitError",
                "errorMessage": f"RequestId: {inv.request_id} Error: Init did not finish "
                                f"(limit {INIT_TIMEOUT_S:.0f} s; exit status "
                                f"{env.proc.poll()})"}).encode()
            inv.started = inv.finished = time.perf_counter()
        else:
            with env.cond:
                env.slot = inv
                env.cond.notify_all()
            while not inv.delivered.wait(0.5):  # the handler has the event, or the process died
                if env.ended.is_set() and not inv.delivered.is_set():
                    inv.error_type, inv.body = "Runtime.ExitError", json.dumps({
                        "errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {inv.request_id} Error: Runtime exited"}
                    ).encode()
                    inv.started = inv.finished = time.perf_counter()
                    inv.done.set()
                    break
            # the function timeout counts from the moment the handler received the event
            if not inv.done.wait(max(0.0, inv.started + cfg.timeout_s - time.perf_counter())):
                status, discard = "timeout", True
                inv.finished = inv.started + cfg.timeout_s
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                inv.error_type = "Sandbox.Timedout"
                inv.body = json.dumps({"errorMessage": f"{stamp}Z {inv.request_id} Task timed "
                                       f"out after {cfg.timeout_s:.2f} seconds"}).encode()
            elif inv.error_type == "Runtime.ExitError":
                status, discard = "exit", True
            elif inv.error_type is not None:
                status = "error"
            with env.cond:
                env.slot = None
        init_ms = env.init_ms if cold and not env.init_reported else None
        env.init_reported = True
        duration = (inv.finished - inv.started) * 1000
        billed = math.ceil(duration + (init_ms or 0.0))
        report = Report(inv.request_id, name, env.id, status, duration, max(billed, 1),
                        cfg.memory_mb, env.max_memory_mb(), init_ms)
        lines = [f"START RequestId: {inv.request_id} Version: {version}",
                 *env.log[first_line:], f"END RequestId: {inv.request_id}", report.line()]
        self._release(fn, env, discard)
        self.reports.append(report)
        tail = "\n".join(lines).encode()[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")
        return Result(inv.body, "Unhandled" if inv.error_type else None, tail, report, version)


def _function_name(raw: str) -> tuple[str, str | None]:
    """``name``, ``name:qualifier`` or an ARN -> (name, qualifier)."""
    raw = unquote(raw)
    if raw.startswith("arn:"):
        parts = raw.split(":")
        return parts[6], (parts[7] if len(parts) > 7 else None)
    name, _, qualifier = raw.partition(":")
    return name, qualifier or None


def _invoke_api(service: LocalLambda) -> type[BaseHTTPRequestHandler]:
    class InvokeAPI(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _fail(self, status: int, error: str, message: str, **extra: str) -> None:
            body = json.dumps({"Type": "User", "message": message, **extra}).encode()
            self._reply(status, body, {"x-amzn-ErrorType": error,
                                       "x-amzn-RequestId": str(uuid.uuid4())})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.split("/")
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if len(parts) != 5 or parts[1:3] != ["2015-03-31", "functions"] \
                    or parts[4] != "invocations":
                return self._fail(404, "UnknownOperationException", f"no route {url.path}")
            name, qualifier = _function_name(parts[3])
            qualifier = parse_qs(url.query).get("Qualifier", [qualifier])[0]
            if name not in service.functions():
                arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
                return self._fail(404, "ResourceNotFoundException", f"Function not found: {arn}")
            if len(payload) > MAX_PAYLOAD_BYTES:
                return self._fail(413, "RequestTooLargeException",
                                  f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes")
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if kind == "DryRun":
                return self._reply(204, b"", {})
            try:
                if kind == "Event":
                    threading.Thread(target=self._background, args=(name, payload, qualifier),
                                     daemon=True).start()
                    return self._reply(202, b"", {})
                result = service.invoke(name, payload or b"{}", qualifier)
            except Throttled:
                return self._fail(429, "TooManyRequestsException", "Rate Exceeded.",
                                  Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            headers = {"X-Amz-Executed-Version": result.executed_version,
                       "x-amzn-RequestId": result.report.request_id}
            if result.function_error:
                headers["X-Amz-Function-Error"] = result.function_error
            if self.headers.get("X-Amz-Log-Type") == "Tail":
                headers["X-Amz-Log-Result"] = base64.b64encode(result.log.encode()).decode()
            return self._reply(200, result.payload, headers)

        @staticmethod
        def _background(name: str, payload: bytes, qualifier: str | None) -> None:
            # Lambda would queue and retry a throttled async event; this runtime drops it
            with contextlib.suppress(Throttled, KeyError):
                service.invoke(name, payload or b"{}", qualifier)

    return InvokeAPI
