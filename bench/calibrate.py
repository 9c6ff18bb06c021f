"""Honesty check: measure a stub server whose answer takes a known, fixed time.

``StubServer`` runs in its own process (``python -m bench.calibrate --serve``) so that it does not
share a GIL with the load generator: a threaded HTTP/1.1 server on 127.0.0.1 (port 0, keep-alive,
Nagle off, a hand-scanned request head, 1 ns timer slack) that sleeps ``delay_ms`` and answers in
the MLflow scoring-server format. ``calibrate``
sweeps the closed-loop generator over 1..32 users against it with ``HttpInvoker`` and tabulates
p50 - delay, the overhead the measuring chain adds. The acceptance bound is
``0 <= p50 - delay <= 1 ms`` at every level.

``HttpInvoker`` is ``deployers.http.HttpInvoker``, the invoker of the local deployer: the check
measures the very client the benchmarks use.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import pandas as pd

from bench.load import LoadSettings, SweepResult, sweep
from bench.payloads import Payloads
from deployers.http import HttpInvoker  # the project's one HTTP invoker, re-exported here

DEFAULT_USERS = [1, 2, 4, 8, 16, 24, 32]
BOUND_MS = 1.0


def _handler(delay_s: float) -> type[socketserver.StreamRequestHandler]:
    """A lean HTTP/1.1 keep-alive handler: the stub must add as little as possible itself.

    ``http.server.BaseHTTPRequestHandler`` parses headers with ``email.parser``; at 2,000 req/s
    that per-request cost queues requests inside the stub and shows up as generator overhead, so
    the request head is scanned by hand (only Content-Length matters)."""
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
            [sys.executable, "-m", "bench.calibrate", "--serve", "--delay-ms", str(self.delay_ms)],
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


@dataclass(frozen=True)
class Calibration:
    """The calibration table (one row per user count) and whether every row met the bound."""

    table: pd.DataFrame
    sweep: SweepResult
    delay_ms: float
    passed: bool


def calibrate(
    delay_ms: float = 16.0, users: list[int] | None = None, warmup_s: float = 1.0,
    duration_s: float = 3.0, bound_ms: float = BOUND_MS,
) -> Calibration:
    """Closed-loop sweep against a fresh stub server; ``passed`` when every level has
    ``0 <= p50 - delay <= bound_ms`` and no failed request."""
    levels = users or DEFAULT_USERS
    payloads = Payloads([[i, i + 1, i + 2] for i in range(1, 2001)], seed=0)
    settings = LoadSettings(warmup_s=warmup_s, duration_s=duration_s, timeout_s=5.0)
    with StubServer(delay_ms) as server:
        result = sweep(HttpInvoker(server.url, timeout_s=5.0), payloads, levels, settings)
    rows = []
    for lv, st in zip(result.levels, result.stats(), strict=True):
        over = st.p50_ms - delay_ms
        rows.append({
            "users": int(lv.level), "requests": st.count, "failed": st.errors + st.timeouts,
            "p50_ms": st.p50_ms, "p95_ms": st.p95_ms, "p99_ms": st.p99_ms,
            "p50_minus_delay_ms": over, "throughput_rps": st.throughput_rps,
            "generator_cpu_pct": 100 * lv.cpu_fraction,
            "ok": bool(0 <= over <= bound_ms and st.errors + st.timeouts == 0),
        })
    table = pd.DataFrame(rows)
    passed = len(rows) == len(levels) and bool(table["ok"].all())
    return Calibration(table, result, delay_ms, passed)


def format_table(cal: Calibration) -> str:
    """The table as fixed-width text, with the verdict."""
    t = cal.table.copy()
    for c in ("p50_ms", "p95_ms", "p99_ms", "p50_minus_delay_ms"):
        t[c] = t[c].map(lambda v: f"{v:.3f}")
    t["throughput_rps"] = t["throughput_rps"].map(lambda v: f"{v:.0f}")
    t["generator_cpu_pct"] = t["generator_cpu_pct"].map(lambda v: f"{v:.0f}")
    verdict = "PASS" if cal.passed else "FAIL"
    return (
        f"stub delay {cal.delay_ms:g} ms, bound 0 <= p50 - delay <= {BOUND_MS:g} ms\n"
        f"{t.to_string(index=False)}\n{verdict}"
    )


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Stub server for the calibration check.")
    ap.add_argument("--serve", action="store_true", help="run the stub server")
    ap.add_argument("--delay-ms", type=float, default=16.0, help="fixed answer delay")
    args = ap.parse_args(argv)
    if not args.serve:
        ap.error("--serve is required (use `python -m bench.cli calibrate` for the check)")
    serve(args.delay_ms)


if __name__ == "__main__":
    _main()
