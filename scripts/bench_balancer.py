"""What the local deployer's nginx balancer adds to a request: latency and CPU.

    python scripts/bench_balancer.py [--requests 2000] [--rounds 3]

Starts the calibration stub (``bench.stub_server``, answering at once) and the project's nginx
balancer (``deployers.balancer``, the config the local deployer writes) in front of it, then in
each round sends ``--requests`` sequential keep-alive requests straight to the stub and the same
through nginx, and prints both medians and means, the difference, and nginx's CPU time per
request (its processes' user + system time over the requests it proxied; the kernel counts it
in clock ticks, 10 ms, so the resolution is 10 ms / requests). Both are stopped at the end, by
the records this script made.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench.stub_server import StubServer
from deployers import balancer as lb
from deployers.http import free_port
from deployers.procs import ProcessRecord, end, members


def latencies_ms(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/invocations", body=b'{"inputs": [[1]]}',
                     headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        out.append(1000 * (time.perf_counter() - t))
    conn.close()
    return out


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_s(record: ProcessRecord) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in members(record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with StubServer(delay_ms=0.001) as stub, tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        port = free_port()
        record, _ = lb.start(lb.write_config(prefix, port, [stub.port], "least_conn", 10.0),
                             prefix, dict(os.environ), role="bench-balancer")
        try:
            wait_listening(port)
            latencies_ms(port, 20)  # nginx's upstream connection open
            for r in range(1, args.rounds + 1):
                direct = latencies_ms(stub.port, args.requests)
                before = cpu_s(record)
                via = latencies_ms(port, args.requests)
                per_request = 1000 * (cpu_s(record) - before) / args.requests
                print(f"round {r}: direct p50 {statistics.median(direct):.3f} ms, mean "
                      f"{statistics.mean(direct):.3f}; through nginx p50 "
                      f"{statistics.median(via):.3f} ms, mean {statistics.mean(via):.3f}; nginx "
                      f"adds {statistics.median(via) - statistics.median(direct):.3f} ms (p50) "
                      f"and {per_request:.3f} ms of CPU per request")
        finally:
            end(record)


if __name__ == "__main__":
    main()
