"""Load from Locust: each closed-loop level of an HTTP endpoint measured by a Locust run.

Promises:

- Locust runs as a subprocess (``python -m locust -f bench/locustfile.py --headless ...``, own
  session, its own folder as working directory); ``locust`` and gevent are never imported into
  this process. ``processes > 1`` adds ``--processes N`` (a master and N forked workers on a free
  port of 127.0.0.1).
- The locustfile sends the pool's batches in our generator's cycle order, each with
  ``deployers.wire``'s body, with zero think time (``bench.locust_mix``, ``bench.locustfile``).
  Every level starts at the pool's first batch.
- A level is ``users`` Locust users for ``ceil(warmup_s + duration_s + RUN_TAIL_S)`` seconds,
  then ``--stop-timeout`` = the request timeout for the requests in flight. Its window starts
  ``warmup_s`` after the first request was sent and lasts ``duration_s``; the per-request records
  become a ``LevelResult`` whose figures ``bench.stats`` computes as for our generator (latency =
  Locust's own ``response_time``). ``warmup_requests`` and ``max_requests`` are not applied.
- The generator's CPU share is what the Locust processes used between test start and stop, over
  the cores of this machine (``LevelResult.cpu_fraction``, flagged above ``cpu_warn_fraction``).
- A Locust run that fails, records nothing or overruns its time is killed (its whole process
  group) and raised as ``LocustError`` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.clock import MONOTONIC, Clock
from bench.level import LevelClock, LevelResult, Record, cores, finish
from bench.load_settings import LoadSettings
from bench.locust_mix import ABANDONED, MIX_ENV, OUT_ENV, Records, read_records, write_mix
from bench.sweep import SweepResult, sweep_with
from deployers.http import HttpInvoker, free_port, tail

GENERATORS = ("niser", "locust")
"""The load generators an HTTP target can be measured with: ours (``bench.closed_loop``) and
Locust."""
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
RUN_TAIL_S = 0.5
"""Locust runs this much longer than warm-up + window, so the window closes before it stops."""
START_S = 60.0
"""Allowance for Locust's start (imports, forking workers) before a level counts as overrun."""
LEVEL_OVERHEAD_S = 4.0
"""Per level, on top of ``LoadSettings.sweep_budget_s``: a Locust start."""
SPAWN_RATE = 1000
"""Users started per second: all of a level's users start at once, as our generator's."""

Batches = Sequence[Sequence[Sequence[int]]]


class LocustError(RuntimeError):
    """A Locust run failed; the message has its command and the tail of its log."""


def labels(generator: str, processes: int = 1) -> dict[str, str]:
    """The MLflow params naming the load generator (``load_generator``: ``niser`` or ``locust``)."""
    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
    if generator == "niser":
        return {"load_generator": "niser"}
    return {"load_generator": "locust", "load_generator_processes": str(processes),
            "locust_version": metadata.version("locust")}


def command(users: int, host: str, run_time_s: int, stop_timeout_s: int, processes: int,
            master_port: int | None = None) -> list[str]:
    """The Locust command line of one level."""
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users!r}")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes!r}")
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "--users", str(users), "--spawn-rate", str(SPAWN_RATE), "--run-time", f"{run_time_s}s",
           "--stop-timeout", str(stop_timeout_s), "--host", host, "--exit-code-on-error", "0",
           "--only-summary", "--loglevel", "WARNING"]
    if processes > 1:
        port = master_port or free_port()
        cmd += ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--master-host", "127.0.0.1",
                "--master-port", str(port)]
    return cmd


def to_level(records: Records, users: int, settings: LoadSettings,
             clock: Clock = MONOTONIC) -> LevelResult:
    """The ``LevelResult`` of one Locust run's records (see the module docstring)."""
    if not records.start_ns:
        raise ValueError("no request was recorded: nothing to make a level of")
    if len(records.clocks) > 1:
        raise ValueError(f"records on different clocks ({', '.join(sorted(records.clocks))}) "
                         "cannot share a window: run every Locust process with the same "
                         "NISER_LOCUST_CLOCK")
    if len(records.hosts) > 1 and records.clocks != {"wall"}:
        raise ValueError(f"records of machines {', '.join(sorted(records.hosts))} are stamped "
                         "with each machine's own monotonic clock: run the Locust workers with "
                         "NISER_LOCUST_CLOCK=wall (NTP-synchronised clocks) to merge them")
    base = min(records.start_ns)
    t0 = base + int(settings.warmup_s * 1e9)
    t1 = max(t0, min(t0 + int(settings.duration_s * 1e9), max(records.end_ns)))
    rows: list[Record] = [
        (start, start, end, status, error, start < t0)
        for start, end, status, error in zip(records.start_ns, records.end_ns, records.status,
                                             records.error, strict=True)]
    rows.sort(key=lambda r: r[0])
    # several machines: their cores are not known here, so the generator's share is not measured
    share = (records.cpu_s / (records.wall_s * cores())
             if records.wall_s > 0 and len(records.hosts) <= 1 else math.nan)
    return finish("closed", users, rows, base, (t0, t1), LevelClock.start(clock), settings,
                  threads=users, abandoned=records.error.count(ABANDONED), generator_cpu=share)


def run_level(url: str, batches: Batches, users: int, settings: LoadSettings | None = None,
              processes: int = 1, clock: Clock = MONOTONIC) -> LevelResult:
    """One Locust run of ``users`` users against ``url`` (``http://HOST:PORT[/PATH]``, path as
    ``deployers.http.HttpInvoker``), sending ``batches`` in cycle order."""
    s = settings or LoadSettings()
    return to_level(locust_records(url, batches, users, s, processes), users, s, clock)


def locust_records(url: str, batches: Batches, users: int, s: LoadSettings,
                   processes: int = 1) -> Records:
    """The raw records of one Locust run (``run_level`` without the level)."""
    target = HttpInvoker(url, timeout_s=s.timeout_s)  # parses the URL; connects to nothing
    run_time = math.ceil(s.warmup_s + s.duration_s + RUN_TAIL_S)
    stop_timeout = math.ceil(s.timeout_s)
    cmd = command(users, target.url, run_time, stop_timeout, processes)
    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="niser-locust-") as tmp:
        out = Path(tmp, "records")
        out.mkdir()
        mix = write_mix(Path(tmp, "mix.json"), batches, target.path, s.k, s.timeout_s, processes)
        env = {**os.environ, MIX_ENV: str(mix), OUT_ENV: str(out),
               "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log_path = Path(tmp, "locust.log")
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=START_S + run_time + stop_timeout + 10)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise LocustError(f"Locust overran its {run_time} s run: {' '.join(cmd)}\n"
                                  f"{tail(log_path)}") from None
            except BaseException:
                _kill(proc)
                raise
        records = read_records(out)
        if rc != 0 or not records.start_ns:
            raise LocustError(f"Locust exited with code {rc} after recording "
                              f"{len(records.start_ns)} requests: {' '.join(cmd)}\n"
                              f"{tail(log_path)}")
    return records


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the Locust process group (master and workers) and reap the master."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def locust_sweep(url: str, batches: Batches, levels: list[int],
                 settings: LoadSettings | None = None, processes: int = 1,
                 budget_s: float | None = None, clock: Clock = MONOTONIC) -> SweepResult:
    """``run_level`` at each user count in ``levels``, as ``bench.sweep.sweep`` runs ours; the
    default budget adds ``LEVEL_OVERHEAD_S`` per level for Locust's start."""
    s = settings or LoadSettings()
    budget = budget_s if budget_s is not None else (
        s.sweep_budget_s(levels) + LEVEL_OVERHEAD_S * len(levels))
    return sweep_with(lambda users, ss: run_level(url, batches, users, ss, processes, clock),
                      levels, s, budget, clock)
