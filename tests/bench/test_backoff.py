"""Closed-loop users back off after connection failures: real sockets, the fake clock.

The dead server is a socket bound on 127.0.0.1 that never listens (connects are refused, and no
other process can take the port meanwhile). The live one is a real HTTP server that resets the
connection, without answering, for the session ``[666]`` and answers every other one. A request
over a real socket takes no fake time, so every figure below is exact.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from bench.backoff import CAP_S, FIRST_S, Backoff
from bench.clock import FakeClock
from bench.closed_loop import closed_loop
from bench.stats import ERROR, OK
from deployers.base import InvocationError
from deployers.http import HttpInvoker
from tests.bench.support import payloads, quick
from tests.http_stub import serving

RESET = [666]


def test_the_pause_doubles_from_10ms_to_a_1s_cap_and_any_answer_starts_it_again() -> None:
    backoff = Backoff()
    assert (FIRST_S, CAP_S) == (0.010, 1.0)
    assert [backoff.after(True) for _ in range(9)] == [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]
    assert backoff.after(False) == 0.0
    assert backoff.after(True) == 0.01


def test_a_first_pause_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="first_s <= cap_s"):
        Backoff(first_s=2.0, cap_s=1.0)


@pytest.fixture
def dead_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_against_a_dead_server_a_user_tries_log2_times_then_once_a_second(dead_url: str) -> None:
    clock = FakeClock()
    res = closed_loop(HttpInvoker(dead_url), payloads(), 1, quick(warmup_s=0, duration_s=3.0),
                      clock)
    # 0, then pauses of 10, 20, 40, 80, 160, 320, 640 ms, then 1 s
    assert (res.start_ns // 1_000_000).tolist() == [0, 10, 30, 70, 150, 310, 630, 1270, 2270]
    assert set(res.status) == {ERROR} and set(res.error) == {"InvocationError:ConnectionRefusedError"}
    assert res.stats().errors == 9 and res.abandoned == 0
    assert clock.now_ns() == 3_000_000_000  # the last pause ends with the window


def test_a_minute_against_a_dead_server_costs_two_users_66_attempts_each(dead_url: str) -> None:
    clock = FakeClock()
    res = closed_loop(HttpInvoker(dead_url), payloads(), 2, quick(warmup_s=0, duration_s=60.0),
                      clock)
    assert res.stats().count == res.stats().errors == 2 * 66  # 7 in the first second, then 1/s
    assert (res.start_ns >= 1_000_000_000).sum() == 2 * 59


def test_a_stop_ends_a_pause_at_once(dead_url: str) -> None:
    clock, stop = FakeClock(), threading.Event()

    def stop_at_500ms() -> None:
        clock.sleep(0.5)
        stop.set()

    clock.spawn(stop_at_500ms, name="stopper")
    res = closed_loop(HttpInvoker(dead_url), payloads(), 1, quick(warmup_s=0, duration_s=30),
                      clock, stop)
    assert res.t1_ns == 500_000_000 and clock.now_ns() == 500_000_000  # mid-pause (310 -> 630)
    assert res.stats().errors == 6


class _ResetsOn666(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        sessions = [r["session"] for r in request["dataframe_records"]]
        if RESET in sessions:  # abort: the client sees a reset, not an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        k = request["params"]["k"]
        body = json.dumps({"predictions": [
            {"items": list(range(1, k + 1)), "scores": [1.0] * k} for _ in sessions]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Script:
    """Hands out the given batches in order, then ``[[5]]`` for ever."""

    def __init__(self, batches: list[list[list[int]]]) -> None:
        self.batches, self.lock = list(batches), threading.Lock()

    def next_batch(self) -> list[list[int]]:
        with self.lock:
            return self.batches.pop(0) if self.batches else [[5]]


@pytest.fixture
def resetting_url() -> Iterator[str]:
    with serving(_ResetsOn666) as url:
        yield url


def test_a_success_from_a_real_server_starts_the_backoff_again(resetting_url: str) -> None:
    clock = FakeClock()
    script = _Script([[RESET]] * 3 + [[[5]]] + [[RESET]] * 2)
    res = closed_loop(HttpInvoker(resetting_url), script, 1,
                      quick(warmup_s=0, duration_s=10, max_requests=8), clock)
    assert res.status.tolist() == [ERROR] * 3 + [OK] + [ERROR] * 2 + [OK] * 2
    assert all(any(cause in e for cause in ("Reset", "Disconnected", "BrokenPipe"))
               for e in res.error[res.status == ERROR]), set(res.error)
    # 10, 20, 40 ms after the resets; none after the answer; then 10 ms again, not 80
    assert (res.start_ns // 1_000_000).tolist() == [0, 10, 30, 70, 70, 80, 100, 100]


def test_an_error_status_never_pauses() -> None:
    clock = FakeClock()

    def unavailable(sessions: list[list[int]], k: int = 20) -> None:
        clock.sleep(0.002)
        raise InvocationError("answered 503", status=503)

    res = closed_loop(unavailable, payloads(), 1, quick(warmup_s=0), clock)  # type: ignore[arg-type]
    assert res.stats().errors == 150  # 300 ms / 2 ms: back to back, as before
    assert set(res.error) == {"InvocationError(503)"}
