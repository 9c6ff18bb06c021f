"""Configured vs measured CPU share of a busy process under cgroup CPU quotas.

For each quota, runs ``--procs`` CPU-bound busy loops (pure Python, no I/O) in one shaped group
for ``--seconds`` and prints the quota, the CPU the group used per wall second (from the group's
``cpuacct.usage`` on cgroup v1, ``cpu.stat`` usage_usec on v2) and its throttling counters from
``cpu.stat``. Needs root and a writable cgroup tree.

    sudo python scripts/bench_shaping.py              # cpus 0.25, 0.5, 1.0 and no quota; 4 s each
    sudo python scripts/bench_shaping.py --cpus 0.5,1.5 --procs 2 --seconds 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from deployers.standins import shaping

BUSY = "while True: pass"


def measure(backend: shaping.Backend, cpus: float | None, procs: int, seconds: float
            ) -> tuple[float, shaping.CpuStat, float]:
    """Busy loops in a group of quota ``cpus`` (None: no quota): (CPU share, stat delta, wall s)."""
    tag = "none" if cpus is None else str(round(cpus * 1000))
    group = backend.create(f"bench-{os.getpid()}-{tag}", shaping.Shape(cpus=cpus))
    children = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(procs)]
    try:
        for child in children:
            group.add(child.pid)
        before, t0 = group.stat(), time.monotonic()
        time.sleep(seconds)
        after, t1 = group.stat(), time.monotonic()
    finally:
        for child in children:
            child.kill()
            child.wait()
        group.remove()
    delta = shaping.CpuStat(after.periods - before.periods,
                            after.throttled_periods - before.throttled_periods,
                            after.throttled_s - before.throttled_s,
                            after.used_cpu_s - before.used_cpu_s)
    return delta.used_cpu_s / (t1 - t0), delta, t1 - t0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure every quota, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", default="0.25,0.5,1.0,none",
                    help="comma-separated CPU quotas; 'none' measures a group without a quota")
    ap.add_argument("--procs", type=int, default=1, help="busy processes in the group")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per quota")
    args = ap.parse_args(argv)
    backend = shaping.detect()
    if backend is None:
        print("resource shaping unavailable: needs root and a writable cgroup tree",
              file=sys.stderr)
        return 2
    print(f"backend {backend.version}, {len(os.sched_getaffinity(0))} cores usable,"
          f" {args.procs} busy process(es), {args.seconds:g} s per quota")
    print("| cpus configured | CPU s used per wall s | measured / configured | periods |"
          " throttled periods | throttled s |")
    print("|---|---|---|---|---|---|")
    for raw in args.cpus.split(","):
        cpus = None if raw.strip() == "none" else float(raw)
        share, d, _ = measure(backend, cpus, args.procs, args.seconds)
        ratio = "-" if cpus is None else f"{share / cpus:.2f}"
        print(f"| {'none' if cpus is None else f'{cpus:g}'} | {share:.3f} | {ratio} |"
              f" {d.periods} | {d.throttled_periods} | {d.throttled_s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
