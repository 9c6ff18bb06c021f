"""Fixtures for deployer tests: a real moto server process standing in for AWS.

``moto_server`` (session) starts ``moto_server`` on 127.0.0.1 at a free port, points every boto3
client at it through ``AWS_ENDPOINT_URL`` with fake credentials in us-east-1 (the variables it
changes are restored afterwards) and resets ``deployers.aws``'s cached session. Every test that
uses it starts from an empty account: ``/moto-api/reset`` runs before each such test.

``aws_calls`` records each AWS operation made through ``deployers.aws`` during a test, as
``(service, operation)`` pairs, so a test can assert that nothing was called.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployers import aws

_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_SECURITY_TOKEN")
_SET = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    for _attempt in range(3):  # the port may be taken between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "wb") as out:
            proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                return proc, url
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"moto_server did not start; its log {log}:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real moto server process that every boto3 client in this process talks to."""
    proc, url = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    with pytest.MonkeyPatch.context() as mp:
        for var in [*_CLEARED, *(v for v in os.environ if v.startswith("AWS_ENDPOINT_URL_"))]:
            mp.delenv(var, raising=False)
        for var, value in _SET.items():
            mp.setenv(var, value)
        mp.setenv("AWS_ENDPOINT_URL", url)
        aws.reset()
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    aws.reset()


@pytest.fixture(autouse=True)
def _fresh_moto_state(request: pytest.FixtureRequest) -> None:
    """Empty the moto account before every test that uses ``moto_server``."""
    if "moto_server" in request.fixturenames:
        url = request.getfixturevalue("moto_server")
        req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=30).close()


@pytest.fixture
def aws_calls() -> Iterator[list[tuple[str, str]]]:
    """Every AWS operation made through ``deployers.aws`` while the test runs."""
    calls: list[tuple[str, str]] = []

    def record(model: Any, **_: Any) -> None:
        calls.append((model.service_model.service_name, model.name))

    events = aws.session().events
    events.register("before-call", record, unique_id="niser-test-aws-calls")
    try:
        yield calls
    finally:
        events.unregister("before-call", unique_id="niser-test-aws-calls")
