"""Which targets' benchmarks may run at once, and running them so.

A benchmark puts load on its target from this machine. When every target is a real AWS
endpoint (provenance ``measured-real``: SageMaker or Lambda reached in AWS), the load generator
is the only work done here, so benchmarks of different targets may run at the same time
(``Schedule.parallel``), ``max_parallel`` at a time. A target measured on this machine (a local
server, an in-process model, a stand-in for SageMaker or Lambda) runs on the cores the load
generator and every other local target use: two at once would measure their contention, not
their shape. So one local target among them makes the schedule sequential, and the schedule
says why (``Schedule.line``).

Cancelling (``run_parallel``): Prefect delivers SIGTERM as ``TerminationSignal`` in the flow's
main thread only. When it (or any other interruption) arrives while the main thread waits for
benchmarks running in other threads, ``run_parallel`` sets ``stop``: a benchmark not yet deployed
is not started, a running sweep starts no further level; each then tears down what it deployed.
It waits for them, then re-raises. The wait is bounded by one level's worst case
(``LoadSettings.level_worst_case_s``) plus a teardown, unless a deploy is under way (a SageMaker
endpoint takes minutes to create): that one ends and is then torn down.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bench import provenance
from bench.provenance import Provenance

MAX_PARALLEL = 16
PARALLEL_WHY = ("each target benchmarked at once runs its own load generator, threads on this "
                "machine's cores")
T = TypeVar("T")
R = TypeVar("R", covariant=True)


class Pending(Protocol[R]):
    """What a submit returns: a ``concurrent.futures.Future`` or a Prefect future."""

    def result(self) -> R: ...


@dataclass(frozen=True)
class Schedule:
    """How the benchmarks of a run's targets are scheduled, and why."""

    parallel: bool
    at_once: int
    reason: str

    def line(self) -> str:
        how = f"in parallel, {self.at_once} at a time" if self.parallel else "one after the other"
        return f"targets benchmarked {how}: {self.reason}"


def schedule(targets: Sequence[tuple[str, str]], max_parallel: int,
             source: Callable[[str], Provenance] = provenance.of_target) -> Schedule:
    """The schedule of ``targets`` (``(name, deployer)`` pairs); ``source`` gives a deployer's
    provenance. ``ValueError`` naming ``max_parallel`` outside 1..``MAX_PARALLEL``."""
    if max_parallel < 1:
        raise ValueError(f"max_parallel_targets must be >= 1, got {max_parallel}")
    if max_parallel > MAX_PARALLEL:
        raise ValueError(f"max_parallel_targets={max_parallel} is above the limit of "
                         f"{MAX_PARALLEL}: {PARALLEL_WHY}")
    local = [name for name, deployer in targets if source(deployer) != "measured-real"]
    if local:
        return Schedule(False, 1, f"{', '.join(local)} measure{'s' if len(local) == 1 else ''} "
                                  "on this machine, whose cores the load generator and every "
                                  "local target share")
    if len(targets) < 2:
        return Schedule(False, 1, "one target")
    if max_parallel == 1:
        return Schedule(False, 1, "max_parallel_targets=1")
    at_once = min(max_parallel, len(targets))
    return Schedule(True, at_once, "every target is a real AWS endpoint; only the load "
                                   "generator runs here")


def run_parallel(items: Sequence[T], submit: Callable[[T, threading.Event], Pending[R]],
                 at_once: int, stop: threading.Event | None = None) -> list[R]:
    """``submit(item, stop)`` for each item, ``at_once`` at a time; their results in order.

    On an interruption while waiting, ``stop`` is set, every submitted item is waited for, and
    the interruption is re-raised (see the module docstring)."""
    stop = stop if stop is not None else threading.Event()
    out: list[R] = []
    for first in range(0, len(items), at_once):
        pending = [submit(item, stop) for item in items[first:first + at_once]]
        try:
            out += [p.result() for p in pending]
        except BaseException:
            stop.set()
            for p in pending:  # the first interruption is the one re-raised
                with contextlib.suppress(BaseException):
                    p.result()
            raise
    return out
