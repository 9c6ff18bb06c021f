"""Where the session manager's time per click goes: one click at a time, after idle gaps.

    python scripts/bench_session_overhead.py --deployer local --deployment shop \
        [--requests 300] [--gaps-ms 0,2,15]

Starts ``niser-mlops session-server`` in front of the deployment (a private SQLite store), and for
each gap between requests (a shop's clicks arrive with the machine idle in between) prints the p50
of, in ms:

- ``echo``: a round trip of one byte to a bare socket echo process (the kernel's and the
  scheduler's floor: two processes woken);
- ``health``: ``GET /health`` of the session server (the HTTP stack alone: uvicorn, Starlette);
- ``direct``: the deployment's invoker called with the session so far (what a shop would see
  calling the endpoint itself);
- ``click``: ``POST /sessions/{id}/clicks`` end to end, its ``endpoint`` share (Server-Timing),
  and ``overhead`` = click minus endpoint per request;
- ``adds``: p50 click minus p50 direct, in the same run.

Clicks and direct calls alternate, so both see the same machine. Sessions cycle through five
clicks of a Diginetica session (raw ids; unknown ids are answered with the fallback, at the same
cost).
"""

from __future__ import annotations

import argparse
import functools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.provenance import MEANING, of_target
from bench.replay_client import SessionClient
from bench.replay_server import running_session_server, session_server_argv
from deployers.base import Invoker
from deployers.registry import get_deployer

SESSION = [21553, 20071, 8762, 21566, 6381]
ECHO = """
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
while (data := conn.recv(64)):
    conn.sendall(data)
"""


FIGURES = ("echo", "health", "direct", "click", "endpoint", "overhead")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure(requests: int, gap_s: float, echo: socket.socket, client: SessionClient,
            invoker: Invoker) -> dict[str, float]:
    """The p50 of each figure (module docstring) over ``requests`` rounds, ``gap_s`` apart."""
    figures: dict[str, list[float]] = {name: [] for name in FIGURES}

    def echo_once() -> None:
        echo.sendall(b"x")
        echo.recv(64)

    for i in range(requests):
        sid = f"g{gap_s * 1e3:g}-{i // len(SESSION)}"
        prefix = SESSION[: i % len(SESSION) + 1]
        figures["echo"].append(_timed(echo_once))
        time.sleep(gap_s)
        figures["health"].append(_timed(client.health))
        time.sleep(gap_s)
        figures["direct"].append(_timed(functools.partial(invoker, [prefix], 20)))
        time.sleep(gap_s)
        t0 = time.perf_counter()
        answer = client.click(sid, prefix[-1], 20)
        e2e = (time.perf_counter() - t0) * 1e3
        if not answer.ok:
            raise SystemExit(f"click failed: {answer.status} {answer.error}")
        figures["click"].append(e2e)
        figures["endpoint"].append(answer.timing["endpoint"])
        figures["overhead"].append(e2e - answer.timing["endpoint"])
        time.sleep(gap_s)
    return {name: statistics.median(values) for name, values in figures.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployer", default="local")
    p.add_argument("--deployment", required=True)
    p.add_argument("--requests", type=int, default=300, help="rounds per gap")
    p.add_argument("--gaps-ms", default="0,2,15", help="idle time between requests")
    args = p.parse_args(argv)
    gaps = [float(g) / 1e3 for g in args.gaps_ms.split(",")]
    invoker = get_deployer(args.deployer).invoker(args.deployment)
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        with tempfile.TemporaryDirectory(prefix="session-overhead-") as tmp, \
                running_session_server(session_server_argv(
                    args.deployer, args.deployment, store=f"sqlite:///{tmp}/sessions.db")) as url:
            assert echo.stdout is not None
            echo_sock = socket.create_connection(("127.0.0.1", int(echo.stdout.readline())))
            echo_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = SessionClient(url)
            source = of_target(args.deployer)
            print(f"figures: {source}: {MEANING[source]}")
            print(f"{'gap ms':>7}{'echo':>8}{'health':>8}{'direct':>8}{'click':>8}"
                  f"{'endpoint':>9}{'overhead':>9}{'adds':>7}   (p50 ms, {args.requests} each)")
            for gap in gaps:
                f = measure(args.requests, gap, echo_sock, client, invoker)
                print(f"{gap * 1e3:>7g}{f['echo']:>8.3f}{f['health']:>8.3f}{f['direct']:>8.2f}"
                      f"{f['click']:>8.2f}{f['endpoint']:>9.2f}{f['overhead']:>9.3f}"
                      f"{f['click'] - f['direct']:>7.2f}")
            client.close()
            echo_sock.close()
    finally:
        echo.kill()
        echo.wait(timeout=30)
        close = getattr(invoker, "close", None)
        if callable(close):
            close()


if __name__ == "__main__":
    main()
