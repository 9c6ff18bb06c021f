"""Where the session manager's time per click goes: one click at a time, after idle gaps.

    python scripts/bench_session_overhead.py --deployer local --deployment shop \
        [--requests 300] [--gaps-ms 0,2,15] [--stacks httptools/uvloop,h11/asyncio]

Starts one ``niser-mlops session-server`` per HTTP stack (its ``--http``/``--loop``; the first is
the default) in front of the deployment (a private SQLite store each), and for each gap between
requests (a shop's clicks arrive with the machine idle in between) prints the p50 of, in ms:

- ``echo``: a round trip of one byte to a bare socket echo process (the kernel's and the
  scheduler's floor: two processes woken);
- ``direct``: the deployment's invoker called with the session so far (what a shop would see
  calling the endpoint itself);
- per stack: ``health``, ``GET /health`` of its session server (the HTTP stack alone: uvicorn,
  Starlette); ``click``, ``POST /sessions/{id}/clicks`` end to end, its ``endpoint`` share
  (Server-Timing), and ``overhead`` = click minus endpoint per request; ``adds``, p50 click
  minus p50 direct, in the same run.

Every round makes the echo, the direct call, then each stack's health and click, so all see the
same machine. Sessions cycle through five clicks of a Diginetica session (raw ids; unknown ids are
answered with the fallback, at the same cost).
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
from contextlib import ExitStack, closing

from bench.provenance import describe, of_target
from bench.replay_client import SessionClient
from bench.replay_server import running_session_server, session_server_argv
from deployers.base import Invoker
from deployers.registry import get_deployer
from sessions.server import EVENT_LOOP, EVENT_LOOPS, HTTP_PARSER, HTTP_PARSERS

SESSION = [21553, 20071, 8762, 21566, 6381]
ECHO = """
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
while (data := conn.recv(64)):
    conn.sendall(data)
"""


PER_STACK = ("health", "click", "endpoint", "overhead")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure(requests: int, gap_s: float, echo: socket.socket, clients: dict[str, SessionClient],
            invoker: Invoker) -> dict[str, float]:
    """The p50 of each figure (module docstring; per stack as ``<stack> <figure>``) over
    ``requests`` rounds, ``gap_s`` idle after each request."""
    figures: dict[str, list[float]] = {"echo": [], "direct": []}
    for stack in clients:
        figures.update({f"{stack} {name}": [] for name in PER_STACK})

    def echo_once() -> None:
        echo.sendall(b"x")
        echo.recv(64)

    for i in range(requests):
        sid = f"g{gap_s * 1e3:g}-{i // len(SESSION)}"
        prefix = SESSION[: i % len(SESSION) + 1]
        figures["echo"].append(_timed(echo_once))
        time.sleep(gap_s)
        figures["direct"].append(_timed(functools.partial(invoker, [prefix], 20)))
        time.sleep(gap_s)
        for stack, client in clients.items():
            figures[f"{stack} health"].append(_timed(client.health))
            time.sleep(gap_s)
            t0 = time.perf_counter()
            answer = client.click(sid, prefix[-1], 20)
            e2e = (time.perf_counter() - t0) * 1e3
            if not answer.ok:
                raise SystemExit(f"click through {stack} failed: {answer.status} {answer.error}")
            figures[f"{stack} click"].append(e2e)
            figures[f"{stack} endpoint"].append(answer.timing["endpoint"])
            figures[f"{stack} overhead"].append(e2e - answer.timing["endpoint"])
            time.sleep(gap_s)
    return {name: statistics.median(values) for name, values in figures.items()}


def _stacks(text: str) -> list[tuple[str, str]]:
    out = []
    for spec in text.split(","):
        http, _, loop = spec.strip().partition("/")
        if http not in HTTP_PARSERS or loop not in EVENT_LOOPS:
            raise SystemExit(f"--stacks: {spec!r} is not PARSER/LOOP with PARSER one of "
                             f"{', '.join(HTTP_PARSERS)} and LOOP one of {', '.join(EVENT_LOOPS)}")
        out.append((http, loop))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployer", default="local")
    p.add_argument("--deployment", required=True)
    p.add_argument("--requests", type=int, default=300, help="rounds per gap")
    p.add_argument("--gaps-ms", default="0,2,15", help="idle time between requests")
    p.add_argument("--stacks", default=f"{HTTP_PARSER}/{EVENT_LOOP}",
                   help="session-server HTTP stacks to compare, PARSER/LOOP,...")
    args = p.parse_args(argv)
    gaps = [float(g) / 1e3 for g in args.gaps_ms.split(",")]
    stacks = _stacks(args.stacks)
    invoker = get_deployer(args.deployer).invoker(args.deployment)
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        with tempfile.TemporaryDirectory(prefix="session-overhead-") as tmp, ExitStack() as up:
            clients = {}
            for n, (http, loop) in enumerate(stacks):
                url = up.enter_context(running_session_server(session_server_argv(
                    args.deployer, args.deployment, store=f"sqlite:///{tmp}/sessions-{n}.db",
                    http=http, loop=loop)))
                clients[f"{http}/{loop}"] = up.enter_context(closing(SessionClient(url)))
            assert echo.stdout is not None
            echo_sock = up.enter_context(socket.create_connection(
                ("127.0.0.1", int(echo.stdout.readline()))))
            echo_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            source = of_target(args.deployer)
            print(f"figures: {describe(source)}")
            print(f"{'gap ms':>7}{'echo':>8}{'direct':>8}  {'stack':<18}{'health':>8}{'click':>8}"
                  f"{'endpoint':>9}{'overhead':>9}{'adds':>7}   (p50 ms, {args.requests} each)")
            for gap in gaps:
                f = measure(args.requests, gap, echo_sock, clients, invoker)
                for stack in clients:
                    print(f"{gap * 1e3:>7g}{f['echo']:>8.3f}{f['direct']:>8.2f}  {stack:<18}"
                          f"{f[stack + ' health']:>8.3f}{f[stack + ' click']:>8.2f}"
                          f"{f[stack + ' endpoint']:>9.2f}{f[stack + ' overhead']:>9.3f}"
                          f"{f[stack + ' click'] - f['direct']:>7.2f}")
    finally:
        echo.kill()
        echo.wait(timeout=30)
        close = getattr(invoker, "close", None)
        if callable(close):
            close()


if __name__ == "__main__":
    main()
