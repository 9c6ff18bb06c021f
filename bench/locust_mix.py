"""What the shipped locustfile (``bench/locustfile.py``) is given and what it gives back, as files.

This module never imports Locust: the benchmark process writes the mix and reads the records, and
only the Locust subprocess imports gevent (which monkey-patches the whole process it runs in).

The **mix** (``write_mix`` / ``read_mix``) is one JSON file: the request path, ``k``, the
per-request timeout and the bodies of the payload pool in our generator's cycle order
(``bench.payloads.Payloads.batches``), each exactly ``deployers.wire.encode_request(batch, k)``.
The locustfile sends body ``i % len(bodies)`` as its i-th request (one counter per process, shared
by its users, as our generator's), so one Locust process sends the same sequence as our generator;
worker ``w`` of ``n`` starts at ``w * len(bodies) // n``. It also carries ``bench.stats``' status
codes, so the locustfile needs neither pandas nor numpy.

The **records** (``RecordWriter`` / ``read_records``) are one tab-separated file per Locust
process, ``records-<host>-<pid>.tsv`` in the records folder: a first line ``#meta <host> <clock>``,
a line per request ``start_ns end_ns status error batch`` (status as ``bench.stats``), and a last
line ``#cpu <cpu_s> <wall_s>``: the process CPU and wall time between Locust's test start and test
stop. The clock (``$NISER_LOCUST_CLOCK``) is ``monotonic`` by default (``time.monotonic_ns()``,
the same in every process of one machine, and no other's) or ``wall`` (``time.time_ns()``, which
machines whose clocks are kept in step by NTP share to within its skew): records of several
machines can be merged only on ``wall``. A request's latency is always one machine's own
difference; the clock only places the requests of different machines in one window. ``<host>``
is ``$NISER_LOCUST_HOST`` or the host name.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from deployers import wire

MIX_ENV = "NISER_LOCUST_MIX"
"""Environment variable naming the mix file (read by the locustfile)."""
OUT_ENV = "NISER_LOCUST_OUT"
"""Environment variable naming the folder the locustfile writes its records to."""
CLOCK_ENV = "NISER_LOCUST_CLOCK"
"""Environment variable choosing the records' clock: ``monotonic`` (default) or ``wall``."""
HOST_ENV = "NISER_LOCUST_HOST"
"""Environment variable naming the machine in its records (default: the host name)."""
CLOCKS = {"monotonic": time.monotonic_ns, "wall": time.time_ns}
ABANDONED = "AbandonedInFlight"
"""Error class of a request still unanswered when Locust stopped its user."""


@dataclass(frozen=True)
class Mix:
    """The locustfile's input: where to send, with which ``k``, and the bodies in cycle order."""

    path: str
    k: int
    timeout_s: float
    processes: int
    bodies: list[str]
    sessions: list[int]  # sessions per body, to check each answer's row count
    codes: dict[str, int]  # bench.stats' status codes by name ("ok", "error", "timeout")

    def start(self, worker_index: int) -> int:
        """The pool index worker ``worker_index`` (0-based) of ``processes`` starts at."""
        return (max(worker_index, 0) % self.processes) * len(self.bodies) // self.processes


def write_mix(path: Path, batches: Sequence[Sequence[Sequence[int]]], url_path: str, k: int,
              timeout_s: float, processes: int = 1) -> Path:
    """Write the mix of ``batches`` (request batches in cycle order) to ``path``."""
    from bench import stats  # here, not at the top: the locustfile reads mixes without pandas

    if not batches:
        raise ValueError("batches is empty: give at least one request batch")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes!r}")
    data = {"path": url_path, "k": int(k), "timeout_s": float(timeout_s), "processes": processes,
            "bodies": [wire.encode_request(b, k).decode() for b in batches],
            "sessions": [len(b) for b in batches],
            "codes": {"ok": stats.OK, "error": stats.ERROR, "timeout": stats.TIMEOUT}}
    path.write_text(json.dumps(data))
    return path


def read_mix(path: str | Path) -> Mix:
    """The mix written by ``write_mix``."""
    data = json.loads(Path(path).read_text())
    return Mix(data["path"], int(data["k"]), float(data["timeout_s"]), int(data["processes"]),
               list(data["bodies"]), [int(n) for n in data["sessions"]], dict(data["codes"]))


def clock_name() -> str:
    """The records' clock named by ``$NISER_LOCUST_CLOCK``; ``ValueError`` naming it otherwise."""
    name = os.environ.get(CLOCK_ENV, "monotonic") or "monotonic"
    if name not in CLOCKS:
        raise ValueError(f"{CLOCK_ENV}={name!r}: expected one of {', '.join(CLOCKS)}")
    return name


def host_name() -> str:
    """This machine's name in its records (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", os.environ.get(HOST_ENV) or socket.gethostname())


class RecordWriter:
    """Appends one process's records to ``<folder>/records-<host>-<pid>.tsv`` (opened on first
    use, with its ``#meta`` line)."""

    def __init__(self, folder: str | Path, clock: str = "monotonic") -> None:
        self.folder, self.clock = Path(folder), clock
        self._file: IO[str] | None = None

    def _out(self) -> IO[str]:
        if self._file is None:
            host = host_name()
            path = self.folder / f"records-{host}-{os.getpid()}.tsv"
            fresh = not path.exists()
            self._file = open(path, "a", buffering=1 << 16)  # noqa: SIM115
            if fresh:
                self._file.write(f"#meta\t{host}\t{self.clock}\n")
        return self._file

    def request(self, start_ns: int, end_ns: int, status: int, error: str, batch: int) -> None:
        self._out().write(f"{start_ns}\t{end_ns}\t{status}\t{error}\t{batch}\n")

    def cpu(self, cpu_s: float, wall_s: float) -> None:
        self._out().write(f"#cpu\t{cpu_s:.6f}\t{wall_s:.6f}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Records:
    """Every process's records of one Locust run, merged."""

    start_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    cpu_s: float = 0.0  # summed over the processes
    wall_s: float = 0.0  # the longest process's
    files: int = 0
    hosts: set[str] = field(default_factory=set)
    clocks: set[str] = field(default_factory=set)


def read_records(*folders: str | Path) -> Records:
    """The records of every ``records-*.tsv`` in ``folders``, in folder, file then line order.
    A file without a ``#meta`` line is this machine's, on the monotonic clock."""
    out = Records()
    for path in (p for folder in folders for p in sorted(Path(folder).glob("records-*.tsv"))):
        out.files += 1
        lines = path.read_text().splitlines()
        meta = lines[0].split("\t") if lines and lines[0].startswith("#meta") else None
        out.hosts.add(meta[1] if meta else host_name())
        out.clocks.add(meta[2] if meta else "monotonic")
        for line in lines[1:] if meta else lines:
            cols = line.split("\t")
            if cols[0] == "#cpu":
                out.cpu_s += float(cols[1])
                out.wall_s = max(out.wall_s, float(cols[2]))
                continue
            out.start_ns.append(int(cols[0]))
            out.end_ns.append(int(cols[1]))
            out.status.append(int(cols[2]))
            out.error.append(cols[3])
            out.batch.append(int(cols[4]))
    return out
