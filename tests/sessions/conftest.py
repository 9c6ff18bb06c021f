"""Fixtures for the session server: a real redis-server process, and a session server process.

``redis_url`` (session) starts Debian's ``redis-server`` on 127.0.0.1 at a free port (no
persistence, its files in a temporary directory) and stops it at the end; tests that use it skip
with the reason when ``redis-server`` is not installed (``scripts/setup.sh`` installs it).
Every test that uses it starts from an empty database (``FLUSHDB``).

``SessionServer`` runs ``niser-mlops session-server`` as a child process (its own process group)
and stops only that process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs Debian's)")
    import redis

    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    with open(workdir / "redis.log", "wb") as log:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(workdir)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start: "
                                   + (workdir / "redis.log").read_text()[-1000:]) from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


class SessionServer:
    """``niser-mlops session-server`` in a child process; ``call`` sends one HTTP request."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> SessionServer:
        port_file = self.workdir / f"port-{time.monotonic_ns()}"
        with open(self.workdir / "session-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", "session-server", "--port-file",
                 str(port_file), *self.args], cwd=self.workdir, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("session server did not start:\n" + self.log()[-3000:])
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
        while self.call("GET", "/health")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("session server did not answer /health:\n" + self.log())
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return (self.workdir / "session-server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str | None = "application/json",
             timeout_s: float = 30.0) -> tuple[int, Any, dict[str, str]]:
        """(status, decoded JSON body or None, headers by lower-case name); connection errors
        raise."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type is not None and data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status, text, found = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, text, found = err.code, err.read(), err.headers
        headers = {k.lower(): v for k, v in found.items()}
        return status, json.loads(text) if text else None, headers

    def click(self, session: str, item: Any, k: int | None = None) -> tuple[int, Any]:
        query = "" if k is None else f"?k={k}"
        status, body, _ = self.call("POST", f"/sessions/{session}/clicks{query}", {"item": item})
        return status, body
