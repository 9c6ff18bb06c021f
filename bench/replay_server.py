"""A session server started for a replay, and stopped after it.

``session_server_argv`` is the one place that knows the command
(``python -m flows.cli session-server ... --port 0 --port-file FILE``); ``running_session_server``
starts any such command in a new session (``deployers.procs.spawn``), waits until it has written
its port (a decimal number, then newline) and answers ``GET /health``, yields its URL, and at the
end stops it by its process id and group (``deployers.procs.end``: SIGTERM, then SIGKILL). When
the server exits or does not come up in time, ``SessionServerError`` carries its log's tail.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.replay_client import SessionClient
from deployers import procs
from deployers.http import tail


class SessionServerError(RuntimeError):
    """The session server did not come up."""


def session_server_argv(deployer: str, deployment: str, *, max_clicks: int = 50,
                        store: str | None = None, http: str | None = None,
                        loop: str | None = None) -> Callable[[Path], list[str]]:
    """The command that serves ``deployment`` of ``deployer``, given the port file to write
    (``http``/``loop``: the server's ``--http``/``--loop``; None keeps its defaults)."""
    def argv(port_file: Path) -> list[str]:
        out = [sys.executable, "-m", "flows.cli", "session-server", "--deployer", deployer,
               "--deployment", deployment, "--port", "0", "--port-file", str(port_file),
               "--max-clicks", str(max_clicks)]
        for option, value in (("--store", store), ("--http", http), ("--loop", loop)):
            if value:
                out += [option, value]
        return out
    return argv


def _port(port_file: Path) -> int | None:
    try:
        text = port_file.read_text()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


@contextmanager
def running_session_server(argv: Callable[[Path], Sequence[str]], *, timeout_s: float = 120.0,
                           poll_s: float = 0.1) -> Iterator[str]:
    """Start ``argv(port_file)``, yield ``http://127.0.0.1:PORT`` once it is healthy, stop it."""
    with tempfile.TemporaryDirectory(prefix="niser-session-server-") as tmp:
        port_file, log = Path(tmp) / "port", Path(tmp) / "session-server.log"
        record, proc = procs.spawn(argv(port_file), os.environ, log, role="session-server")
        try:
            yield _wait(proc.poll, port_file, log, timeout_s, poll_s)
        finally:
            procs.end(record)


def _wait(poll: Callable[[], int | None], port_file: Path, log: Path, timeout_s: float,
          poll_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        port = _port(port_file)
        if port is not None:
            url = f"http://127.0.0.1:{port}"
            client = SessionClient(url, timeout_s=min(5.0, timeout_s))
            try:
                client.health()
                return url
            except RuntimeError as exc:
                last = str(exc)
            finally:
                client.close()
        code = poll()
        if code is not None:
            raise SessionServerError(
                f"the session server exited with code {code} before answering /health; last "
                f"lines of its log:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise SessionServerError(
                f"the session server did not answer /health within {timeout_s:g} s "
                f"({last or 'no port written yet'}); raise the start-up timeout if the machine "
                f"is busy. Last lines of its log:\n{tail(log)}")
        time.sleep(poll_s)
