"""The front door: the rules every HTTP data plane of the project puts in front of a scoring
server, as nginx configuration fragments (Debian ``nginx-light``).

``deployers.balancer`` (every local deployment) and ``deployers.standins.sagemaker_dataplane``
(the SageMaker runtime stand-in) build their nginx configs from these pieces, so both answer
alike. The same fragments can be put in front of any other server that speaks MLflow's
``/invocations`` contract (a real container, a cloud VM): ``http_rules`` in ``http {}``,
``server_rules`` in ``server {}``, one ``invocations_location`` per scoring path and ``health_location``
for ``/ping`` and ``/health``.

Promises of a config built from them:

- Only ``POST`` with a JSON body reaches the scoring server's ``/invocations``: another method
  gets 405 with ``Allow: POST``; a Content-Type other than ``application/json`` (any case,
  optionally ``; charset=utf-8`` in any case, quoted or not, spaces allowed), a missing or an
  empty one gets 415 whose message names ``application/json``. ``GET``/``HEAD`` on ``/ping`` and
  ``/health`` reach the server (health checks); every other path gets 404.
- A body over ``MAX_BODY_BYTES`` (6 MB, where Lambda and SageMaker real-time stop) gets 413; a
  request line or header over the ``large_client_header_buffers`` gets 400 (nginx's 494 and 414);
  slow clients meet ``client_header_timeout``/``client_body_timeout`` (408 or a closed
  connection) and ``send_timeout``.
- More than ``Limits.max_connections`` requests in flight at once (per deployment, or per
  endpoint of the SageMaker stand-in) get 429 ``TOO_MANY_REQUESTS``: a client's cue to back off
  and retry, as Lambda's throttling answers 429.
- A 5xx of the scoring server is replaced by a short fixed JSON body of the same status (no
  stack trace, no echo of the input); nginx's own 502/504 (server down or too slow) look the
  same. The scoring server's 4xx bodies pass through unchanged, except 408, 413 and 429, which
  the door itself answers with its own body of the same status.
- Every error answer nginx makes is ``{"error_code": "...", "message": "..."}`` with
  ``Content-Type: application/json``, under ``MAX_ERROR_BYTES``. One exception: nginx's own 400
  for a malformed chunked body on ``/invocations`` keeps nginx's page, since an ``error_page``
  for 400 there would also hide the scoring server's own 400s.
- When nginx starts as root, its workers run as ``worker_user()`` (``nobody``), never as root;
  ``prepare_prefix`` gives that user what it needs (its temp folders, and passage to them).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ACCEPTED_TYPE = "application/json"
# Lambda's synchronous invoke and SageMaker real-time InvokeEndpoint both stop at 6 MB.
MAX_BODY_BYTES = 6 * 1024 * 1024
MAX_ERROR_BYTES = 4096
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# ``application/json``, any case, optionally ``; charset=utf-8`` (any case, quotes, spaces).
_JSON_TYPE = r'~*^[ \t]*application/json[ \t]*(;[ \t]*charset[ \t]*=[ \t]*"?utf-8"?[ \t]*)?$'

# status -> (error_code, message) of the answers nginx itself makes.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BAD_REQUEST", "the request could not be read"),
    404: ("ENDPOINT_NOT_FOUND", "no such path; POST /invocations scores"),
    405: ("METHOD_NOT_ALLOWED", "this path takes POST only"),
    408: ("REQUEST_TIMEOUT", "the request was not received in time"),
    413: ("PAYLOAD_TOO_LARGE",
          f"the request body is over the limit of {MAX_BODY_BYTES} bytes (6 MB)"),
    414: ("URI_TOO_LONG", "the request line is too long"),
    415: ("UNSUPPORTED_MEDIA_TYPE",
          f"Content-Type must be {ACCEPTED_TYPE} (optionally with charset=utf-8)"),
    429: ("TOO_MANY_REQUESTS", "too many requests in flight; retry later"),
    494: ("REQUEST_HEADER_TOO_LARGE", "a request header, or the headers, are too large"),
    500: ("INTERNAL_ERROR", "the model server failed to answer this request"),
    502: ("BAD_GATEWAY", "the model server is not reachable"),
    503: ("SERVICE_UNAVAILABLE", "the model server is unavailable; retry later"),
    504: ("GATEWAY_TIMEOUT", "the model server did not answer in time"),
}
_HEALTH_ONLY = "this path takes GET or HEAD only"
# nginx sends its 494 (header too large) as 400.
_SENT_AS = {494: 400}
# The codes intercepted inside a proxied location: every upstream 5xx, and the 4xx that nginx
# makes there itself (an error_page for a code also intercepts the upstream's answers of it).
_PROXIED = (408, 413, 429, 500, 501, 502, 503, 504, 505)


@dataclass(frozen=True)
class Limits:
    """The door's limits (defaults: 1024 requests in flight, header lines of 8 KB and 32 KB of
    headers in all, 10 s to send the header or each piece of the body, 60 s to take each piece
    of the answer)."""

    max_connections: int = 1024
    header_buffer: str = "8k"
    header_buffers: int = 4
    client_timeout_s: int = 10
    send_timeout_s: int = 60


def error_body(status: int, message: str | None = None) -> str:
    """The JSON body the door answers ``status`` with (``message`` replaces the usual one)."""
    code, usual = ERRORS.get(status, ERRORS[500] if status >= 500 else ERRORS[400])
    body = json.dumps({"error_code": code, "message": message or usual})
    assert len(body) <= MAX_ERROR_BYTES
    return body


def _quoted(text: str) -> str:
    """``text`` as an nginx single-quoted string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def worker_user() -> tuple[str, str] | None:
    """(user, group) nginx's workers run as when it starts as root (``nobody`` and its primary
    group); ``None`` when not root (workers keep this process's user)."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name


def prepare_prefix(prefix: Path, passage: Sequence[Path] = ()) -> dict[str, Path]:
    """Create nginx's temp folders under ``prefix`` (owned by the worker user when root) and let
    that user pass through ``prefix`` and the folders ``passage`` (mode 0711: no listing);
    return the folders by name."""
    temp = {name: prefix / "tmp" / name for name in TEMP_DIRS}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    user = worker_user()
    if user is not None:
        nobody = pwd.getpwnam(user[0])
        for folder in (*passage, prefix, prefix / "tmp"):
            folder.chmod(folder.stat().st_mode | 0o711)
        for path in temp.values():
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
            path.chmod(0o700)
    return temp


def main_rules(prefix: Path, limits: Limits | None = None) -> str:
    """The top of ``nginx.conf``: foreground, one worker (as ``worker_user()`` when root) with
    room for two connections per request the limit lets in, the pid file and error log in
    ``prefix``."""
    user = worker_user()
    who = f"user {user[0]} {user[1]};\n" if user is not None else ""
    room = max(4096, 2 * (limits or Limits()).max_connections + 64)
    return (f"{who}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn;\nevents {{ worker_connections {room}; }}\n")


def http_rules(prefix: Path, limits: Limits, conn_key: str = "$server_port") -> str:
    """Directives for ``http {}``: temp paths, body and header limits, timeouts, the connection
    limit (one count per value of ``conn_key``) and the Content-Type check ``$niser_bad_type``."""
    temp = "".join(f"    {name}_temp_path {prefix / 'tmp' / name};\n" for name in TEMP_DIRS)
    t = limits.client_timeout_s
    return (
        temp
        + "    server_tokens off;\n"
        f"    client_max_body_size {MAX_BODY_BYTES};\n"
        "    client_header_buffer_size 1k;\n"
        f"    large_client_header_buffers {limits.header_buffers} {limits.header_buffer};\n"
        f"    client_header_timeout {t}s;\n    client_body_timeout {t}s;\n"
        f"    send_timeout {limits.send_timeout_s}s;\n"
        f"    limit_conn_zone {conn_key} zone=niser_door:1m;\n"
        "    limit_conn_status 429;\n    limit_conn_log_level warn;\n"
        "    map $http_content_type $niser_bad_type {\n"
        f"        default 1;\n        {_quoted(_JSON_TYPE)} 0;\n    }}\n"
    )


# Error pages are internal URIs, not named locations: nginx cannot redirect a request whose
# line it could not parse (``GET /../x``: no URI) to a named location, and answers 500 instead.
_ERROR_PREFIX = "/.niser-error/"


def _error_page(status: int) -> str:
    return f"error_page {status} {_ERROR_PREFIX}{status};"


def server_rules(limits: Limits) -> str:
    """Directives for ``server {}``: JSON error pages for every code nginx answers, the
    connection limit, and 404 for every path no other location takes."""
    pages = "".join(f"        {_error_page(s)}\n" for s in sorted(ERRORS))
    named = "".join(
        f"        location = {_ERROR_PREFIX}{s} {{ internal; default_type {ACCEPTED_TYPE}; "
        f"return {_SENT_AS.get(s, s)} {_quoted(error_body(s))}; }}\n"
        for s in sorted({*ERRORS, *_PROXIED}))
    return (
        f"        default_type {ACCEPTED_TYPE};\n"
        f"        limit_conn niser_door {limits.max_connections};\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n'
        "        proxy_next_upstream off;\n"
        + pages + named
        + f"        location / {{ return 404 {_quoted(error_body(404))}; }}\n"
    )


def invocations_location(path: str, target: str, read_timeout_s: float,
                         extra: str = "", exact: bool = True) -> str:
    """A ``location`` for ``path`` that passes only JSON ``POST`` to ``target`` (``proxy_pass``'s
    argument) and replaces the upstream's 5xx; ``extra`` adds directives (``add_header``...)."""
    timeout = max(1, round(read_timeout_s))
    pages = " ".join(_error_page(s) for s in _PROXIED)
    return (
        f"        location {'= ' if exact else ''}{path} {{\n"
        "            if ($request_method != POST) {\n"
        "                add_header Allow POST always;\n"
        f"                return 405 {_quoted(error_body(405))};\n"
        "            }\n"
        f"            if ($niser_bad_type) {{ return 415 {_quoted(error_body(415))}; }}\n"
        f"            proxy_pass {target};\n"
        f"            proxy_read_timeout {timeout}s;\n"
        "            proxy_intercept_errors on;\n"
        f"            {pages}\n"
        f"{extra}"
        "        }\n"
    )


def health_location(path: str, target: str, extra: str = "") -> str:
    """A ``location = path`` passing ``GET``/``HEAD`` to ``target`` (health checks)."""
    pages = " ".join(_error_page(s) for s in _PROXIED)
    return (
        f"        location = {path} {{\n"
        "            if ($request_method !~ ^(GET|HEAD)$) {\n"
        "                add_header Allow 'GET, HEAD' always;\n"
        f"                return 405 {_quoted(error_body(405, _HEALTH_ONLY))};\n"
        "            }\n"
        f"            proxy_pass {target};\n"
        "            proxy_read_timeout 10s;\n"
        "            proxy_intercept_errors on;\n"
        f"            {pages}\n"
        f"{extra}"
        "        }\n"
    )
