"""How uvicorn's workers share keep-alive connections: the split the performance model assumes.

A scoring server with ``w`` workers (``mlflow models serve -w``: uvicorn, one listening socket
shared by the worker processes) keeps each keep-alive connection on the worker that accepted
it. Which one accepts is a race, and asyncio's accept loop takes every connection queued when it
wakes, so the split is more uneven than a fair coin per connection. ``bench.perfmodel`` takes it
as a symmetric Dirichlet-multinomial split with concentration ``ACCEPT_ALPHA``; this script
measures it.

It starts uvicorn on 127.0.0.1 (a free port, the scoring server's stack: h11 on asyncio) with
``--workers`` workers of a probe app that spends ``--cpu-ms`` of CPU per request and answers its
process id, then, ``--rounds`` times for every user count, starts that many threads that each
open one keep-alive connection at once (released together, as a closed-loop level starts its
users) and send ``--requests`` requests on it. A connection's worker is the process id it is
answered by. Prints every split, the maximum-likelihood concentration and the log-likelihood of
the splits under it and under the fair coin (``alpha`` infinite), and writes them as JSON with
``--out``. The server is stopped (its process group) on exit.

    python scripts/bench_accept.py --workers 2 --rounds 20 --out benchmarks/results/accept_split.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.perfmodel_laws import fit_accept_alpha, split_log_likelihood
from deployers.http import free_port
from deployers.procs import SCORING_SERVER_STACK

CPU_S = float(os.environ.get("ACCEPT_PROBE_CPU_MS", "2.0")) / 1000.0


async def app(scope: dict[str, object], receive: object, send: object) -> None:
    """The probe: read the body, spend ``CPU_S`` of CPU, answer this worker's process id."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()  # type: ignore[operator]
        if not message.get("more_body"):
            break
    start = time.process_time()
    while time.process_time() - start < CPU_S:
        pass
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def _wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/", body=b"{}")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the probe server on port {port} did not answer in {timeout_s:.0f} s")


def one_split(port: int, users: int, requests: int) -> list[int]:
    """Connections per worker (largest first) of ``users`` connections opened together."""
    gate = threading.Barrier(users)
    owners: list[str] = []
    lock = threading.Lock()

    def user() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        gate.wait()
        pid = ""
        for _ in range(requests):
            conn.request("POST", "/invocations", body=b"{}")
            pid = conn.getresponse().read().decode()
        conn.close()
        with lock:
            owners.append(pid)

    threads = [threading.Thread(target=user) for _ in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(Counter(owners).values(), reverse=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--users", default="2,3,4,6,8,11,16", help="comma-separated user counts")
    p.add_argument("--rounds", type=int, default=20, help="splits measured per user count")
    p.add_argument("--requests", type=int, default=20, help="requests per connection")
    p.add_argument("--cpu-ms", type=float, default=2.0, help="probe CPU per request")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if a.workers < 2:
        p.error(f"--workers must be >= 2 (a split needs two workers), got {a.workers}")
    users = [int(u) for u in a.users.split(",")]
    if any(u < 2 for u in users):
        p.error(f"--users must all be >= 2, got {a.users!r}")
    port = free_port()
    env = {**os.environ, **SCORING_SERVER_STACK, "ACCEPT_PROBE_CPU_MS": str(a.cpu_ms)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench_accept:app", "--app-dir",
         str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port), "--workers",
         str(a.workers), "--http", env["UVICORN_HTTP"], "--loop", env["UVICORN_LOOP"],
         "--log-level", "warning"], env=env, start_new_session=True)
    try:
        _wait_ready(port)
        splits: dict[int, list[list[int]]] = {}
        for n in users:
            splits[n] = [one_split(port, n, a.requests) for _ in range(a.rounds)]
            print(f"{n:3d} users: " + " ".join("/".join(map(str, s)) for s in splits[n]),
                  flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    observed = [s for ss in splits.values() for s in ss]
    alpha = fit_accept_alpha(observed, a.workers)
    fair = split_log_likelihood(observed, a.workers, float("inf"))
    fitted = split_log_likelihood(observed, a.workers, alpha)
    print(f"workers {a.workers}, {len(observed)} splits, probe {a.cpu_ms} ms CPU per request")
    print(f"maximum-likelihood concentration alpha = {alpha:.3f} "
          f"(log-likelihood {fitted:.1f}; fair coin per connection: {fair:.1f})")
    if a.out:
        a.out.write_text(json.dumps({"workers": a.workers, "cpu_ms": a.cpu_ms,
                                     "requests": a.requests, "splits": splits, "alpha": alpha,
                                     "log_likelihood": fitted,
                                     "log_likelihood_fair": fair}, indent=1))


if __name__ == "__main__":
    main()
