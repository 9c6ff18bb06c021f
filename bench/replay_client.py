"""A client of the session server's HTTP API (``niser-mlops session-server``), for the replay.

Promises:

- One keep-alive ``http.client.HTTPConnection`` per calling thread (``deployers.http.KeepAlive``),
  for the reason ``deployers.http`` gives: the generator's own CPU per request is what skews
  latencies. A reused connection the server closed while idle is reopened once, transparently.
- ``click`` never raises for a failed click: it returns a ``ClickAnswer`` with the HTTP status
  (0 when no answer came), whether the socket timed out, and the error (the server's
  ``{"error": ...}`` sentence, or the exception's class and message).
- ``Server-Timing`` (``store;dur=<ms>, endpoint;dur=<ms>, total;dur=<ms>``) is parsed into
  ``ClickAnswer.timing``, name -> ms; a missing or malformed entry is absent, never an error.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from deployers.http import KeepAlive

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``"store;dur=1.5, endpoint;dur=3"`` -> ``{"store": 1.5, "endpoint": 3.0}``."""
    out: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    out[name] = float(value.strip().strip('"'))
    return out


@dataclass(frozen=True)
class ClickAnswer:
    """What the server answered to one click."""

    status: int  # HTTP status; 0 when no answer came
    items: tuple[int, ...] = ()
    clicks: tuple[int, ...] = ()  # the session after this click, as the server holds it
    timing: dict[str, float] = field(default_factory=dict)  # Server-Timing, ms
    error: str = ""  # "" for a 200 with a well-formed body
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


class SessionClient:
    """Thread-safe client of one session server (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like http://HOST:PORT, got {url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._connections = KeepAlive(self.host, self.port, timeout_s)

    def __repr__(self) -> str:
        return f"SessionClient({self.url!r}, timeout_s={self.timeout_s})"

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, bytes, str | None]:
        """One round trip: (status, body, ``Server-Timing``). Transport errors raise."""
        status, data, headers = self._connections.request(method, self.prefix + path, body,
                                                          _JSON)
        return status, data, headers.get("Server-Timing")

    def click(self, session_id: str, item: int, k: int) -> ClickAnswer:
        """``POST /sessions/{id}/clicks?k=`` with ``{"item": item}``."""
        path = f"/sessions/{quote(session_id, safe='')}/clicks?k={k}"
        try:
            status, data, timing = self.request("POST", path, json.dumps({"item": item}).encode())
        except TimeoutError as exc:
            return ClickAnswer(0, error=f"TimeoutError: {exc}", timed_out=True)
        except (OSError, http.client.HTTPException) as exc:
            return ClickAnswer(0, error=f"{type(exc).__name__}: {exc}")
        parsed = parse_server_timing(timing)
        try:
            body: Any = json.loads(data)
        except ValueError:
            return ClickAnswer(status, timing=parsed,
                               error=f"not JSON: {data[:200].decode('utf-8', 'replace')!r}")
        if status != 200:
            msg = body.get("error") if isinstance(body, dict) else None
            return ClickAnswer(status, timing=parsed, error=str(msg or body)[:300])
        try:
            items = tuple(int(i) for i in body["items"])
            clicks = tuple(int(i) for i in body.get("clicks", ()))
        except (KeyError, TypeError, ValueError) as exc:
            return ClickAnswer(status, timing=parsed,
                               error=f"unexpected body ({type(exc).__name__}: {exc})")
        return ClickAnswer(status, items, clicks, parsed)

    def delete(self, session_id: str) -> int:
        """``DELETE /sessions/{id}``: the status (204 deleted, 404 unknown; 0 no answer)."""
        try:
            status, _, _ = self.request("DELETE", f"/sessions/{quote(session_id, safe='')}")
        except (OSError, http.client.HTTPException):
            return 0
        return status

    def health(self) -> dict[str, Any]:
        """``GET /health`` as JSON; ``RuntimeError`` unless it answers 200."""
        try:
            status, data, _ = self.request("GET", "/health")
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeError(f"GET {self.url}/health failed: {type(exc).__name__}: {exc} "
                               "(is the session server running?)") from exc
        if status != 200:
            raise RuntimeError(f"GET {self.url}/health answered {status}: {data[:300]!r}")
        try:
            out = json.loads(data)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise RuntimeError(f"GET {self.url}/health answered a body that is not a JSON "
                               f"object: {data[:300]!r}")
        return out

    def close(self) -> None:
        """Close every connection this client opened, in every thread."""
        self._connections.close()
