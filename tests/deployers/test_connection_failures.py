"""Which failed requests are connection failures (``InvocationError.connection``), on real sockets.

A port where nothing listens is a socket bound on 127.0.0.1 that never calls ``listen``: a connect
to it is refused, and no other process can take the port while the test holds it. A timeout to
connect is a listening socket whose backlog of one is full (its one connection never accepted).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from deployers import aws
from deployers.aws_lambda.invoker import LambdaInvoker
from deployers.base import InvocationError
from deployers.http import ConnectTimeout, HttpInvoker
from deployers.sagemaker.invoker import SageMakerInvoker
from tests.http_stub import serving


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by this test and not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening port that accepts nothing and whose backlog is full: connects time out."""
    with socket.socket() as srv, socket.socket() as filler:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = int(srv.getsockname()[1])
        filler.connect(("127.0.0.1", port))
        yield port


class _Answers(BaseHTTPRequestHandler):
    """Answers every POST with the status its path starts with (``/500/...`` -> 500), or stalls
    without answering on ``/slow/...``."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        first = self.path.split("/")[1]
        if first == "slow":
            threading.Event().wait(0.6)
            return
        self.send_response(int(first))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def answering() -> Iterator[str]:
    with serving(_Answers) as url:
        yield url


def test_a_refused_connection_is_a_connection_failure(dead_port: int) -> None:
    with pytest.raises(InvocationError, match="ConnectionRefusedError") as info:
        HttpInvoker(f"http://127.0.0.1:{dead_port}")([[2]], k=1)
    assert info.value.connection and info.value.status is None


def test_a_timeout_to_connect_is_a_connection_failure(full_backlog: int) -> None:
    with pytest.raises(InvocationError, match="ConnectTimeout") as info:
        HttpInvoker(f"http://127.0.0.1:{full_backlog}", timeout_s=0.2)([[2]], k=1)
    assert info.value.connection and isinstance(info.value.__cause__, ConnectTimeout)
    assert isinstance(info.value.__cause__, TimeoutError)  # still a timeout to bench.level


def test_a_name_that_does_not_resolve_is_a_connection_failure() -> None:
    with pytest.raises(InvocationError) as info:
        HttpInvoker("http://no-such-host.invalid:8080")([[2]], k=1)
    assert info.value.connection and isinstance(info.value.__cause__, socket.gaierror)


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_an_error_status_is_not_a_connection_failure(answering: str, status: int) -> None:
    with pytest.raises(InvocationError) as info:
        HttpInvoker(answering, path=f"/{status}")([[2]], k=1)
    assert info.value.status == status and not info.value.connection


def test_a_slow_answer_past_the_timeout_is_not_a_connection_failure(answering: str) -> None:
    with pytest.raises(InvocationError, match="timed out") as info:
        HttpInvoker(answering, path="/slow", timeout_s=0.2)([[2]], k=1)
    assert not info.value.connection


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(var, value)
    aws.reset()
    yield
    aws.reset()


def test_boto3_invokers_mark_a_refused_endpoint_as_a_connection_failure(
        dead_port: int, fake_credentials: None) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    invokers = [LambdaInvoker("fn", "live", endpoint_url=url), SageMakerInvoker("ep", url)]
    for invoke in invokers:
        with pytest.raises(InvocationError, match="Could not connect") as info:
            invoke([[2]], k=1)
        assert info.value.connection, invoke


def test_boto3_read_timeout_and_error_status_are_not_connection_failures(
        answering: str, fake_credentials: None) -> None:
    slow = LambdaInvoker("fn", None, endpoint_url=answering + "/slow", read_timeout_s=0.2)
    with pytest.raises(InvocationError, match="Read timeout") as info:
        slow([[2]], k=1)
    assert not info.value.connection
    with pytest.raises(InvocationError) as info:
        SageMakerInvoker("ep", answering + "/503")([[2]], k=1)
    assert info.value.status == 503 and not info.value.connection
