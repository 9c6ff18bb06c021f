"""The Lambda stand-in's two HTTP servers read request bodies strictly (``standins.http_body``):
raw sockets against the real Invoke API (``LocalLambda``) and a real environment's Runtime API."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from deployers.standins import FunctionConfig, LocalLambda, http_body
from deployers.standins.lambda_environment import Environment, runtime_dir
from tests.deployers.lambda_support import toy_package
from tests.deployers.test_standin_lambda import TOY, invoke

INVOKE = "/2015-03-31/functions/toy/invocations"
RUNTIME = "/2018-06-01/runtime/invocation/no-such-id/response"


@pytest.fixture
def service() -> Iterator[LocalLambda]:
    with LocalLambda(shaped=False) as svc:
        yield svc


@pytest.fixture(params=["invoke-api", "runtime-api"])
def server(request: pytest.FixtureRequest, tmp_path: Path,
           service: LocalLambda) -> Iterator[tuple[int, str, str]]:
    """(port, path, kind) of one of the two servers."""
    if request.param == "invoke-api":
        yield int(service.url.rsplit(":", 1)[1]), INVOKE, "invoke"
        return
    env = Environment(FunctionConfig("toy", toy_package(tmp_path / "pkg", TOY)),
                      runtime_dir(tmp_path / "runtime"), provisioned=False)
    try:
        yield int(env.server.server_address[1]), RUNTIME, "runtime"
    finally:
        env.kill()


def exchange(port: int, head: bytes, body: bytes = b"", half_close: bool = True
             ) -> tuple[int, dict[str, str], dict[str, object]]:
    """Send raw bytes, read the answer until the server closes: (status, headers, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(payload)


def head(path: str, *headers: str) -> bytes:
    return "".join(f"{line}\r\n" for line in (f"POST {path} HTTP/1.1", "Host: x", *headers)
                   ).encode()


def kind_of(kind: str, headers: dict[str, str], body: dict[str, object]) -> object:
    """The error type as each server states it."""
    return headers.get("x-amzn-errortype") if kind == "invoke" else body["errorType"]


@pytest.mark.parametrize("lines, status, invoke_type, runtime_type", [
    ((), 411, "LengthRequiredException", "LengthRequired"),
    (("Transfer-Encoding: chunked",), 411, "LengthRequiredException", "LengthRequired"),
    (("Content-Length: -1",), 400, "InvalidRequestContentException", "InvalidContentLength"),
    (("Content-Length: +2",), 400, "InvalidRequestContentException", "InvalidContentLength"),
    (("Content-Length: 0x2",), 400, "InvalidRequestContentException", "InvalidContentLength"),
    (("Content-Length: 2, 2",), 400, "InvalidRequestContentException", "InvalidContentLength"),
    (("Content-Length: 2", "Content-Length: 2"), 400, "InvalidRequestContentException",
     "InvalidContentLength"),
    (("Content-Length: 2", "Transfer-Encoding: chunked"), 400,
     "InvalidRequestContentException", "InvalidContentLength"),
])
def test_a_missing_or_malformed_content_length_is_refused(
        server: tuple[int, str, str], lines: tuple[str, ...], status: int, invoke_type: str,
        runtime_type: str) -> None:
    port, path, kind = server
    got, headers, body = exchange(port, head(path, *lines), b"{}")
    assert got == status
    assert kind_of(kind, headers, body) == (invoke_type if kind == "invoke" else runtime_type)
    assert headers["connection"] == "close"


def test_a_declared_size_past_6_mb_is_refused_before_any_byte_is_read(
        server: tuple[int, str, str]) -> None:
    port, path, kind = server
    # nothing of the body is sent, and the client keeps writing open: the answer comes anyway
    got, headers, body = exchange(port, head(path, "Content-Length: 6291457"), half_close=False)
    assert got == 413
    if kind == "invoke":
        assert headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
        assert "smaller than 6291456 bytes for the InvokeFunction operation" in str(body)
    else:
        assert body["errorType"] == "RequestEntityTooLarge"


def test_a_body_shorter_than_declared_is_400_when_the_client_closed_early(
        server: tuple[int, str, str]) -> None:
    port, path, _ = server
    got, _, body = exchange(port, head(path, "Content-Length: 100"), b'{"a":')
    assert got == 400 and "5 of 100 bytes" in str(body)


def test_a_stalled_body_is_400_after_the_body_timeout_not_a_hang(
        server: tuple[int, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_body, "BODY_TIMEOUT_S", 0.3)
    port, path, _ = server
    got, _, body = exchange(port, head(path, "Content-Length: 100"), b'{"a":', half_close=False)
    assert got == 400 and "stalled" in str(body)


def test_boto3_invoke_still_works_and_a_6_mb_payload_is_413(service: LocalLambda,
                                                             tmp_path: Path) -> None:
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, TOY)))
    out, body, _ = invoke(service, "toy", {"a": 1})
    assert out["StatusCode"] == 200 and body["echo"] == {"a": 1}
    with pytest.raises(ClientError, match="RequestEntityTooLargeException"):
        invoke(service, "toy", {"a": "x" * (6 * 1024 * 1024)})
    out, body, _ = invoke(service, "toy", {"a": 2})  # the service is unharmed
    assert body["echo"] == {"a": 2}
