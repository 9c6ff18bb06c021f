"""The front door's rules (``deployers.frontdoor``) in a real nginx, in front of a small stdlib
upstream that answers what each test needs, so no model server has to start."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deployers import balancer as lb
from deployers import frontdoor, procs
from deployers.http import free_port, wait_for_ping

TRACE = 'Traceback (most recent call last):\n  File "secret.py"'


class _Upstream(http.server.BaseHTTPRequestHandler):
    """``/ping``: 200. ``/invocations``: the body of the request decides: ``{"fail": 500}``
    answers 500 with a stack trace echoing the input, ``{"fail": 400}`` a 400 of its own, else
    200 saying which port served it."""

    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b"{}")

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ask = json.loads(data or b"{}").get("fail") if data.startswith(b"{") else None
        if ask == 500:
            self._send(500, f"{TRACE}\ninput: {data.decode()}".encode(), "text/plain")
        elif ask == 400:
            self._send(400, b'{"error_code": "BAD_REQUEST", "message": "mine"}')
        else:
            port = self.server.server_address[1]  # type: ignore[index]
            self._send(200, json.dumps({"port": port, "seen": self.headers.get(
                "Content-Type")}).encode())

    def log_message(self, *args: object) -> None:
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # nginx's keep-alive connections are reset when it stops


MASTER: dict[str, int] = {}  # door URL -> pid of its nginx master


@contextlib.contextmanager
def _door(handler: type[http.server.BaseHTTPRequestHandler],
          limits: frontdoor.Limits | None = None) -> Iterator[str]:
    """A front door (``balancer.write_config``) on a stdlib upstream of ``handler``: its URL."""
    upstream = _Quiet(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="niser-door-test-") as tmp:
        prefix = Path(tmp) / "nginx"
        prefix.mkdir()
        port = free_port()
        config = lb.write_config(prefix, port, [int(upstream.server_address[1])],
                                 "least_conn", 10.0, limits, passage=[Path(tmp)])
        record, proc = lb.start(config, prefix, dict(os.environ), "test-door")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_ping(url, 15, proc, prefix / "error.log")
            MASTER[url] = record.pid
            yield url
        finally:
            procs.end(record)
            upstream.shutdown()
            upstream.server_close()


@pytest.fixture(scope="module")
def door() -> Iterator[str]:
    with _door(_Upstream) as url:
        yield url


def _ask(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def _error(status: int, body: bytes, headers: http.client.HTTPMessage) -> dict[str, str]:
    """The door's JSON error, checked for shape."""
    assert headers["Content-Type"] == "application/json", (status, headers)
    assert len(body) <= frontdoor.MAX_ERROR_BYTES
    answer = json.loads(body)
    assert set(answer) == {"error_code", "message"}, answer
    return dict(answer)


@pytest.mark.parametrize("kind", [
    "application/json", "APPLICATION/JSON", "Application/Json; Charset=UTF-8",
    "application/json;charset=utf-8", 'application/json; charset="utf-8"',
    "application/json ;  CHARSET = utf-8 "])
def test_json_post_reaches_the_server(door: str, kind: str) -> None:
    status, body, headers = _ask(door, "POST", "/invocations", b"{}", {"Content-Type": kind})
    assert status == 200, body
    assert json.loads(body)["seen"] == kind.strip()  # passed on unchanged
    assert headers["X-Upstream"].startswith("127.0.0.1:")


@pytest.mark.parametrize("kind", [None, "", "text/plain", "application/json; charset=latin-1",
                                  "application/jsonx", "application/x-www-form-urlencoded"])
def test_other_content_types_get_415_naming_json(door: str, kind: str | None) -> None:
    headers = {} if kind is None else {"Content-Type": kind}
    status, body, answer_headers = _ask(door, "POST", "/invocations", b"{}", headers)
    assert status == 415
    answer = _error(status, body, answer_headers)
    assert answer["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/json" in answer["message"]


def test_other_methods_get_405_with_allow_post(door: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, body, headers = _ask(door, method, "/invocations")
        assert status == 405 and headers["Allow"] == "POST"
        assert _error(status, body, headers)["error_code"] == "METHOD_NOT_ALLOWED"


def test_health_checks_pass_and_other_paths_get_404(door: str) -> None:
    for path in ("/ping", "/health"):
        assert _ask(door, "GET", path)[0] == 200
    for path in ("/admin", "/", "/invocations/x", "/version"):
        status, body, headers = _ask(door, "GET", path)
        assert status == 404, path
        assert _error(status, body, headers)["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_body_over_6_mb_gets_413(door: str) -> None:
    big = b"[" + b" " * frontdoor.MAX_BODY_BYTES + b"]"
    status, body, headers = _ask(door, "POST", "/invocations", big,
                                 {"Content-Type": "application/json"})
    assert status == 413
    assert _error(status, body, headers)["error_code"] == "PAYLOAD_TOO_LARGE"
    # the limit is read from Content-Length, before any of the body is sent
    host, port = door.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {frontdoor.MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def test_a_header_too_large_gets_a_4xx_json_error(door: str) -> None:
    status, body, headers = _ask(door, "POST", "/invocations", b"{}",
                                 {"Content-Type": "application/json", "X-Big": "x" * 40_000})
    assert 400 <= status < 500
    assert _error(status, body, headers)["error_code"] == "REQUEST_HEADER_TOO_LARGE"


def test_many_headers_adding_up_past_32_kb_get_a_4xx_json_error(door: str) -> None:
    many = {f"X-H{i}": "v" * 200 for i in range(200)}  # 40 KB, no line over 8 KB
    status, body, headers = _ask(door, "POST", "/invocations", b"{}",
                                 {"Content-Type": "application/json", **many})
    assert 400 <= status < 500
    assert _error(status, body, headers)["error_code"] == "REQUEST_HEADER_TOO_LARGE"


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"])
def test_a_request_line_nginx_cannot_parse_gets_a_400_json_error_not_a_500(
        door: str, path: str) -> None:
    with socket.create_connection(("127.0.0.1", int(door.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _, body = sock.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error_code"] == "BAD_REQUEST"


def test_an_upstream_5xx_is_replaced_and_its_4xx_passes(door: str) -> None:
    status, body, headers = _ask(door, "POST", "/invocations", b'{"fail": 500, "x": "mine"}',
                                 {"Content-Type": "application/json"})
    assert status == 500
    assert _error(status, body, headers)["error_code"] == "INTERNAL_ERROR"
    assert b"Traceback" not in body and b"mine" not in body
    status, body, _ = _ask(door, "POST", "/invocations", b'{"fail": 400}',
                           {"Content-Type": "application/json"})
    assert (status, body) == (400, b'{"error_code": "BAD_REQUEST", "message": "mine"}')


def test_every_error_body_is_short_json() -> None:
    for status in frontdoor.ERRORS:
        answer = json.loads(frontdoor.error_body(status))
        assert set(answer) == {"error_code", "message"}
        assert len(frontdoor.error_body(status)) <= frontdoor.MAX_ERROR_BYTES


@pytest.mark.skipif(os.geteuid() != 0, reason="workers keep the user of a non-root nginx")
def test_nginx_workers_do_not_run_as_root(door: str) -> None:
    master = psutil.Process(MASTER[door])
    assert master.username() == "root"
    workers = master.children()
    assert workers and {w.username() for w in workers} == {"nobody"}
    assert _ask(door, "POST", "/invocations", b"{}", {"Content-Type": "application/json"}
                )[0] == 200


ARRIVED, RELEASE = threading.Event(), threading.Event()


class _Holding(_Upstream):
    """Holds every POST until ``RELEASE`` is set (``ARRIVED`` says one is held)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ARRIVED.set()
        RELEASE.wait(timeout=60)
        self._send(200, b"{}")


def test_requests_over_the_connection_limit_get_429() -> None:
    with _door(_Holding, frontdoor.Limits(max_connections=1)) as url:
        first: list[int] = []
        held = threading.Thread(target=lambda: first.append(_ask(
            url, "POST", "/invocations", b"{}", {"Content-Type": "application/json"})[0]))
        held.start()
        try:
            assert ARRIVED.wait(timeout=30)
            status, body, headers = _ask(url, "POST", "/invocations", b"{}",
                                         {"Content-Type": "application/json"})
            assert status == 429
            assert _error(status, body, headers)["error_code"] == "TOO_MANY_REQUESTS"
        finally:
            RELEASE.set()
            held.join(timeout=30)
        assert first == [200]
