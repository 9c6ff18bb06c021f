"""Reading a request body by its Content-Length, strictly, for the stand-ins' HTTP servers.

``read_body(handler, limit)`` returns the body of a request, or raises ``Refused`` (status,
reason, message) before or instead of reading it:

- 411 ``LengthRequired``: no Content-Length (a chunked body included: not supported here);
- 400 ``InvalidContentLength``: Content-Length not plain ASCII decimal digits (a sign, a
  comma list, ``5_0``), given more than once, or beside Transfer-Encoding;
- 413 ``RequestEntityTooLarge``: a declared size above ``limit``, refused before a byte of the
  body is read;
- 400 ``IncompleteBody``: fewer bytes than declared, because the client closed early or sent
  nothing for ``BODY_TIMEOUT_S`` (a socket timeout on the body read only, so a keep-alive
  connection or a long poll waiting for its next request is not cut).

Each server answers a refusal in its own error format, with ``Connection: close``, then calls
``linger_close``: it stops sending and discards what the client still sends (at most the
declared size, for at most ``LINGER_S``), so a client still writing its body reads the answer
instead of a reset.
"""

from __future__ import annotations

import re
import socket
import time
from http.server import BaseHTTPRequestHandler

BODY_TIMEOUT_S = 5.0
"""Longest silence while reading a body before it counts as incomplete (read at call time)."""

LINGER_S = 2.0
"""Longest time ``linger_close`` discards a refused body."""

_DECIMAL = re.compile(r"[0-9]+")


class Refused(Exception):
    """A request body was refused: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str, message: str, unread: int = 1 << 20) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.unread = status, reason, message, unread


def content_length(handler: BaseHTTPRequestHandler, limit: int) -> int:
    """The declared body size; ``Refused`` as the module docstring says."""
    values = handler.headers.get_all("Content-Length") or []
    if handler.headers.get("Transfer-Encoding") is not None:
        if values:
            raise Refused(400, "InvalidContentLength",
                          "Content-Length and Transfer-Encoding both given: send one")
        raise Refused(411, "LengthRequired", "Transfer-Encoding is not supported: send the body "
                      "with a Content-Length")
    if not values:
        raise Refused(411, "LengthRequired", "a request with a body needs a Content-Length")
    if len(values) > 1:
        raise Refused(400, "InvalidContentLength",
                      f"Content-Length given {len(values)} times: {values!r}; give it once")
    text = values[0].strip(" \t")
    if not _DECIMAL.fullmatch(text):
        raise Refused(400, "InvalidContentLength",
                      f"Content-Length {text!r} is not a non-negative decimal number")
    size = int(text) if len(text) <= 18 else limit + 1
    if size > limit:
        raise Refused(413, "RequestEntityTooLarge",
                      f"Request must be smaller than {limit} bytes (Content-Length {text})",
                      unread=size)
    return size


def read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """The request body, exactly as long as its Content-Length; ``Refused`` otherwise."""
    size = content_length(handler, limit)
    sock = handler.connection
    previous = sock.gettimeout()
    sock.settimeout(BODY_TIMEOUT_S)
    try:
        body = handler.rfile.read(size)
    except TimeoutError:
        body = b""
    finally:
        sock.settimeout(previous)
    if len(body) < size:
        raise Refused(400, "IncompleteBody",
                      f"the body ended after {len(body)} of {size} bytes (Content-Length) or "
                      f"stalled for {BODY_TIMEOUT_S} s", unread=size)
    return body


def linger_close(handler: BaseHTTPRequestHandler, unread: int) -> None:
    """After a refusal was answered: stop sending, discard up to ``unread`` bytes the client
    still sends (at most ``LINGER_S``), and leave the connection to be closed."""
    handler.close_connection = True
    sock = handler.connection
    deadline = time.monotonic() + LINGER_S
    try:
        handler.wfile.flush()
        sock.shutdown(socket.SHUT_WR)
        while unread > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, 0.5))
            chunk = sock.recv(min(unread, 1 << 16))
            if not chunk:
                break
            unread -= len(chunk)
    except OSError:
        pass
