"""A flow checks the tracking server's /health before it starts: a dead or unhealthy server is a
clear error naming it, at once; a file or database store needs no server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from bench.tracking import check_tracking_server
from tests.http_stub import serving


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[str]:
    status = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url


@pytest.mark.parametrize("health_server", [200], indirect=True)
def test_a_healthy_server_passes(health_server):
    check_tracking_server(health_server)


@pytest.mark.parametrize("health_server", [503], indirect=True)
def test_an_unhealthy_server_is_named_with_its_answer(health_server):
    with pytest.raises(RuntimeError, match=rf"{health_server} answered 503 on /health"):
        check_tracking_server(health_server)


def test_a_server_that_is_not_there_is_named_at_once():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match=rf"127\.0\.0\.1:{port} did not answer .*start it"):
        check_tracking_server(f"http://127.0.0.1:{port}", timeout_s=2)


def test_a_database_store_needs_no_server(tmp_path):
    check_tracking_server(f"sqlite:///{tmp_path / 'mlflow.db'}")
