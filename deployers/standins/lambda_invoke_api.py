"""The Invoke API of the local Lambda service, as boto3 ``lambda.invoke`` sends it.

``invoke_api(service)`` is the HTTP handler of ``POST /2015-03-31/functions/{name}/invocations``
(``name``, ``name:qualifier`` or an ARN; ``?Qualifier=``) for any ``Service`` (``LocalLambda``):
``RequestResponse`` answers the invocation's ``Result`` (``X-Amz-Executed-Version``,
``X-Amz-Function-Error``, the base64 log tail in ``X-Amz-Log-Result`` with ``LogType=Tail``),
``Event`` answers 202 and runs it in the background, ``DryRun`` answers 204. Errors are Lambda's:
404 ``ResourceNotFoundException``, 413 ``RequestEntityTooLargeException`` past 6 MB (6,291,456
bytes; the name AWS sends, where its reference says RequestTooLargeException), 429
``TooManyRequestsException`` when ``invoke`` raises ``Throttled``. The body is read strictly
(``http_body``): before anything is read, a declared size past 6 MB is refused (413); a bad or
repeated Content-Length, or a body shorter than declared, is 400
``InvalidRequestContentException``; no Content-Length is 411 ``LengthRequiredException`` (this
stand-in's name); each refusal closes the connection. ``Report`` is what the
REPORT line of one invocation says.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from deployers.standins.http_body import Refused, linger_close, read_body
from deployers.standins.lambda_environment import ACCOUNT, MAX_PAYLOAD_BYTES

__all__ = ["MAX_PAYLOAD_BYTES", "Report", "Result", "Service", "Throttled", "invoke_api"]
_REFUSED_TYPE = {400: "InvalidRequestContentException", 411: "LengthRequiredException",
                 413: "RequestEntityTooLargeException"}


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
    error_type: str | None = None  # Lambda's "Error Type" field (Runtime.OutOfMemory)
    peak_rss_mb: int | None = None  # the process's VmHWM (not on the line; None once ended)

    def line(self) -> str:
        """The REPORT line, tab-separated fields. Lambda ends the line of an invocation killed
        for memory with the fields ``Status: error`` and ``Error Type: Runtime.OutOfMemory``
        after Max Memory Used (and Init Duration); the other statuses here (error, timeout,
        init_error, exit) keep this stand-in's names, without an Error Type."""
        text = (f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms\t"
                f"Billed Duration: {self.billed_ms} ms\tMemory Size: {self.memory_mb} MB\t"
                f"Max Memory Used: {self.max_memory_mb} MB\t")
        if self.init_ms is not None:
            text += f"Init Duration: {self.init_ms:.2f} ms\t"
        # Lambda's logs show "...Max Memory Used: 10 MB\tStatus: error\tError Type: Runtime.
        # InvalidEntrypoint"; no log seen here had both Init Duration and Status, so their order
        # (Init Duration first) is a guess.
        text += "" if self.status == "success" else f"Status: {self.status}"
        return text + (f"\tError Type: {self.error_type}" if self.error_type else "")


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


class Service(Protocol):
    """What the Invoke API needs of the service behind it."""

    def functions(self) -> list[str]: ...

    def invoke(self, name: str, payload: bytes, qualifier: str | None = None) -> Result: ...


def function_name(raw: str) -> tuple[str, str | None]:
    """``name``, ``name:qualifier`` or an ARN -> (name, qualifier)."""
    raw = unquote(raw)
    if raw.startswith("arn:"):
        parts = raw.split(":")
        return parts[6], (parts[7] if len(parts) > 7 else None)
    name, _, qualifier = raw.partition(":")
    return name, qualifier or None


def invoke_api(service: Service) -> type[BaseHTTPRequestHandler]:
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
            try:
                payload = read_body(self, MAX_PAYLOAD_BYTES)
            except Refused as refused:
                message = refused.message
                if refused.status == 413:
                    message = (f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                               "InvokeFunction operation")
                body = json.dumps({"Type": "User", "message": message}).encode()
                self._reply(refused.status, body, {
                    "x-amzn-ErrorType": _REFUSED_TYPE[refused.status],
                    "x-amzn-RequestId": str(uuid.uuid4()), "Connection": "close"})
                return linger_close(self, refused.unread)
            if len(parts) != 5 or parts[1:3] != ["2015-03-31", "functions"] \
                    or parts[4] != "invocations":
                return self._fail(404, "UnknownOperationException", f"no route {url.path}")
            name, qualifier = function_name(parts[3])
            qualifier = parse_qs(url.query).get("Qualifier", [qualifier])[0]
            if name not in service.functions():
                arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
                return self._fail(404, "ResourceNotFoundException", f"Function not found: {arn}")
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
