"""Calling an MLflow scoring server over HTTP, and waiting for one to come up.

``HttpInvoker`` promises:

- one keep-alive ``http.client.HTTPConnection`` per calling thread (``TCP_NODELAY`` on), so it is
  safe to call from many threads at once and a benchmark measures the server, not connection set-up;
- a request is ``POST <path>`` with the body of ``deployers.wire.encode_request``; a 2xx answer
  becomes a ``Prediction`` through ``deployers.wire.decode_response`` (``raw`` is the decoded JSON);
- a non-2xx answer raises ``InvocationError`` with its status and body; a refused, reset or timed
  out connection, or an answer that is not the contract's JSON, raises ``InvocationError`` with
  ``status=None`` (or the status received). A connection the server closed while idle is reopened
  once, transparently.
- ``InvocationError.connection`` is True exactly when ``connection_failed`` says so of the cause:
  the connection was refused, reset or aborted, the name did not resolve, the host was
  unreachable, or connecting timed out (``ConnectTimeout``). A timeout waiting for an answer on a
  connection that was made is not a connection failure: the server is there, only slow.

Why ``http.client`` and not urllib3: against nginx answering a fixed 4-session body, the client
spent ~0.10 ms of CPU per request with ``http.client`` and ~0.16 ms with a urllib3 connection pool
(5,000 requests each, 2-core machine), and a load generator's own CPU is what skews latencies.

``wait_for_ping`` returns once ``GET <url>/ping`` answers 200, and raises ``DeployerError`` with the
tail of the server's log when the process dies first or the timeout passes.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployers import wire
from deployers.base import DeployerError, InvocationError, Prediction

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# Errors that mean "the idle keep-alive connection was closed by the server": retry once.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})


class ConnectTimeout(TimeoutError):
    """Opening the connection timed out (no answer can have come)."""


def connection_failed(exc: BaseException) -> bool:
    """Whether a transport error means there was no connection to the server: refused, reset,
    aborted, a broken pipe, a name that did not resolve, an unreachable host, a timeout to
    connect. A timeout waiting for an answer, or an answer that is not HTTP, is not."""
    if isinstance(exc, ConnectionError | socket.gaierror | ConnectTimeout):
        return True
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE


class KeepAlive:
    """Thread-safe keep-alive HTTP/1.1 connections to one server: one ``http.client`` connection
    per calling thread, ``TCP_NODELAY`` on; a reused connection the server closed while idle is
    reopened once, transparently. Transport errors raise (``OSError``, ``HTTPException``; a
    timeout to connect raises ``ConnectTimeout``)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            return conn, True
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise ConnectTimeout(f"connecting to {self.host}:{self.port} timed out after "
                                 f"{self.timeout_s} s") from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes, http.client.HTTPMessage]:
        """One round trip on this thread's connection: (status, body, headers)."""
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except _STALE:
                self._drop()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._drop()
                raise
            if resp.will_close:
                self._drop()
            return resp.status, data, resp.headers
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection opened, in every thread."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class HttpInvoker:
    """A thread-safe invoker for a scoring server's ``/invocations`` (see the module docstring)."""

    def __init__(self, url: str, path: str | None = None, timeout_s: float = 30.0) -> None:
        """``url`` is the server (``http://HOST:PORT``) or the endpoint itself
        (``http://HOST:PORT/PATH``); ``path`` is appended to it, and defaults to
        ``/invocations`` when ``url`` names no path."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like http://HOST:PORT or http://HOST:PORT/PATH, "
                             f"got {url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        base = parts.path.rstrip("/")
        if path is None:
            path = "" if base else "/invocations"
        self.url = f"http://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (base + "/" + path.lstrip("/")) if path else base
        self.timeout_s = timeout_s
        self._connections = KeepAlive(self.host, self.port, timeout_s)

    def __repr__(self) -> str:
        return f"HttpInvoker({self.url + self.path!r}, timeout_s={self.timeout_s})"

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        body = wire.encode_request(sessions, k)
        try:
            status, data, _ = self._connections.request("POST", self.path, body, _HEADERS)
        except (OSError, http.client.HTTPException) as exc:
            raise InvocationError(
                f"POST {self.url}{self.path} failed: {type(exc).__name__}: {exc}"
                " (is the server running? see its log)", connection=connection_failed(exc),
            ) from exc
        text = data.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise InvocationError(
                f"POST {self.url}{self.path} answered {status}: {text[:500]}", status, text
            )
        try:
            return wire.decode_response(json.loads(text), len(sessions))
        except ValueError as exc:
            raise InvocationError(
                f"POST {self.url}{self.path} answered {status} with an unexpected body ({exc}):"
                f" {text[:500]}", status, text,
            ) from exc

    def close(self) -> None:
        """Close every connection this invoker opened, in every thread."""
        self._connections.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: str | Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if path is None:
        return "(no log file)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


def probe(url: str, timeout_s: float = 2.0) -> tuple[int, http.client.HTTPMessage]:
    """Status and headers (case-insensitive) of ``GET url`` right now, on a direct connection
    (no proxy: these are servers this machine started); status 0 and no headers when nothing
    answers. The body is read and dropped."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        resp.read()
        return int(resp.status), resp.headers
    except (OSError, http.client.HTTPException):
        return 0, http.client.HTTPMessage()
    finally:
        conn.close()


def ping(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET <url>/ping`` answers 200 right now."""
    return probe(url.rstrip("/") + "/ping", timeout_s)[0] == 200


def wait_for_ping(
    url: str, timeout: float, process: subprocess.Popen[Any] | None = None,
    log_path: str | Path | None = None, interval_s: float = 0.2,
) -> float:
    """Block until ``<url>/ping`` answers 200; return the seconds waited.

    Raises ``DeployerError`` with the tail of ``log_path`` if ``process`` exits first, or when
    ``timeout`` seconds pass (the message says which, and how to give it more time).
    """
    start = time.monotonic()
    while True:
        if ping(url, timeout_s=min(2.0, max(timeout, 0.1))):
            return time.monotonic() - start
        if process is not None and process.poll() is not None:
            raise DeployerError(
                f"the server for {url} exited with code {process.returncode} before answering"
                f" /ping; last lines of {log_path}:\n{tail(log_path)}"
            )
        waited = time.monotonic() - start
        if waited > timeout:
            raise DeployerError(
                f"the server for {url} did not answer /ping within {timeout:.0f} s (raise the"
                f" start-up timeout if the machine is busy); last lines of {log_path}:\n"
                f"{tail(log_path)}"
            )
        time.sleep(interval_s)
