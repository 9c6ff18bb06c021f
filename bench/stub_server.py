"""A stub scoring server whose answer takes a known, fixed time: the calibration's target.

``StubServer`` runs the server in its own process (``python -m bench.cli serve-stub``) so that it
does not share a GIL with the load generator: a threaded HTTP/1.1 server on 127.0.0.1 (port 0,
keep-alive, Nagle off, a hand-scanned request head, 1 ns timer slack) that sleeps ``delay_ms`` and
answers in the MLflow scoring-server format. Why each of these choices: BENCHMARKS.md, "The
calibration stub".
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from types import TracebackType


def _handler(delay_s: float) -> type[socketserver.StreamRequestHandler]:
    """A lean HTTP/1.1 keep-alive handler that answers every POST after ``delay_s``."""
    body = json.dumps({"predictions": [
        {"items": list(range(1, 21)), "scores": [1.0] * 20, "unknown_items": [], "fallback": False}
    ]}).encode()
    post_answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    get_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    class Stub(socketserver.StreamRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket

        def handle(self) -> None:
            rfile, wfile = self.rfile, self.wfile
            while True:
                request_line = rfile.readline(65537)
                if not request_line:
                    return  # client closed the connection
                length = 0
                while True:
                    header = rfile.readline(65537)
                    if header in (b"\r\n", b"\n", b""):
                        break
                    if header[:15].lower() == b"content-length:":
                        length = int(header[15:])
                if length:
                    rfile.read(length)
                if request_line.startswith(b"POST"):
                    time.sleep(delay_s)
                    wfile.write(post_answer)  # one write: no Nagle/delayed-ACK stall
                else:  # GET /ping
                    wfile.write(get_answer)

    return Stub


def _fine_timer_slack() -> None:
    """Linux lets a sleep overshoot by the thread's timer slack (50 us by default); ask for 1 ns
    so the stub's delay is as exact as the kernel allows. A no-op where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK; inherited by threads created later
    except (OSError, AttributeError):
        pass


def serve(delay_ms: float) -> None:
    """Run the stub server in this process until SIGTERM; prints ``PORT <n>`` once listening."""
    _fine_timer_slack()
    socketserver.ThreadingTCPServer.request_queue_size = 256
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _handler(delay_ms / 1e3))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)


class StubServer:
    """The stub server as a child process (own session); ``url`` is its ``/invocations``."""

    def __init__(self, delay_ms: float = 16.0, start_timeout_s: float = 20.0) -> None:
        self.delay_ms = delay_ms
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invocations"

    def start(self) -> StubServer:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "serve-stub", "--delay-ms", str(self.delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = ""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline and not line.startswith("PORT "):
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
        if not line.startswith("PORT "):
            self.stop()
            err = self.proc.stderr.read()[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"stub server did not start within {self.start_timeout_s} s: {err}")
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crashing target would die."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
