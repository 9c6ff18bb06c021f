"""What a shaped stand-in used during one load level, and whether its CPU quota bound.

A stand-in shaped like its cloud target (``deployers.standins.shaping``: a cgroup with a CPU
quota per instance or per Lambda environment) reports cumulative ``deployers.base.Usage``
readings. The sweep reads one before and one after each level; ``LevelUsage`` is the difference,
with the wall time of the level and how busy the whole machine was meanwhile.

Definitions (closed loop, zero think time):

- ``cpu_share`` = CPU seconds the stand-in's groups used / wall seconds of the level.
- ``quota_total`` = ``quota_cpus`` x live groups (what the shape allows at most).
- *Meant to bind*: each request in flight can keep one CPU busy, so a group with more requests in
  flight than its quota (``level / groups > quota_cpus``) would use more than its quota if it
  were free to. In open loop (a rate, not a count of requests in flight) it is not judged.
- *Bound*: the quota stopped the group in at least ``THROTTLED_MIN`` of its CFS periods, or the
  groups used at least ``USED_MIN`` of ``quota_total``.
- *Contended*: the whole machine was at least ``CONTENDED`` busy during the level.
- ``shaping_bound`` = 1 when meant to bind and bound, 0 when meant to bind, not bound and
  contended (the machine was too busy to give the groups even their quota: the figure is
  slower than the shape would be on its own hardware), absent otherwise: when the quota was
  not meant to bind, or when the machine had CPU to spare and the stand-in still stayed under
  its quota (it asked for no more: e.g. fewer workers or threads than its CPUs).
- ``machine_busy`` = share of this machine's CPU time (all processes, from ``/proc/stat``)
  that was not idle during the level.

The load generator must run outside every shaped group (``assert_outside_shaped_groups``),
or its own CPU would count against the stand-in's quota.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deployers.base import Usage
from deployers.standins.shaping import PARENT

THROTTLED_MIN = 0.10
USED_MIN = 0.90
CONTENDED = 0.90

MachineTimes = Callable[[], tuple[float, float]]
"""``() -> (busy, total)`` CPU time of the whole machine so far, in any unit."""


def machine_times(stat: Path = Path("/proc/stat")) -> tuple[float, float]:
    """Busy and total CPU jiffies of the machine (``cpu`` line of ``/proc/stat``)."""
    try:
        fields = [float(x) for x in stat.read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True)
class LevelUsage:
    """The stand-in's CPU during one level (see the module docstring for every definition)."""

    shaping: str
    wall_s: float
    used_cpu_s: float
    quota_cpus: float | None
    groups: int
    periods: int
    throttled_periods: int
    throttled_s: float
    machine_busy: float

    @classmethod
    def between(cls, before: Usage, after: Usage, wall_s: float,
                machine_before: tuple[float, float],
                machine_after: tuple[float, float]) -> LevelUsage:
        d = after.since(before)
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        return cls(d.shaping, wall_s, d.used_cpu_s, d.quota_cpus, max(d.live, 1), d.periods,
                   d.throttled_periods, d.throttled_s, busy / total if total > 0 else float("nan"))

    @property
    def cpu_share(self) -> float:
        return self.used_cpu_s / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def quota_total(self) -> float | None:
        return None if self.quota_cpus is None else self.quota_cpus * self.groups

    @property
    def throttled_fraction(self) -> float:
        return self.throttled_periods / self.periods if self.periods > 0 else 0.0

    def meant_to_bind(self, level: float, mode: str) -> bool | None:
        """Whether the quota should have limited the groups at this level (None: not judged)."""
        if self.quota_cpus is None or mode != "closed":
            return None
        return level / self.groups > self.quota_cpus

    @property
    def bound(self) -> bool:
        quota = self.quota_total
        if quota is None:
            return False
        return self.throttled_fraction >= THROTTLED_MIN or self.cpu_share >= USED_MIN * quota

    @property
    def contended(self) -> bool:
        return self.machine_busy >= CONTENDED

    def contention_limited(self, level: float, mode: str) -> bool:
        """Meant to bind, not bound, and the machine had no CPU to spare."""
        return bool(self.meant_to_bind(level, mode)) and not self.bound and self.contended

    def metrics(self, level: float, mode: str) -> dict[str, float]:
        """The per-level MLflow metrics (``standin_*``, ``cpu_*``, ``shaping_bound``)."""
        out = {
            "standin_cpu_share": self.cpu_share, "standin_cpu_s": self.used_cpu_s,
            "standin_groups": float(self.groups), "cpu_periods": float(self.periods),
            "cpu_throttled_periods": float(self.throttled_periods),
            "cpu_throttled_s": self.throttled_s, "machine_cpu_busy": self.machine_busy,
        }
        if self.quota_total is not None:
            out["standin_cpu_quota"] = self.quota_total
        if self.meant_to_bind(level, mode) and (self.bound or self.contended):
            out["shaping_bound"] = 1.0 if self.bound else 0.0
        return out


def shaped_groups_of(pid: int | str = "self", proc: Path = Path("/proc")) -> list[str]:
    """The project's shaped cgroups process ``pid`` is in (``/proc/<pid>/cgroup`` lines naming
    a ``niser-mlops`` group)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return []
    inside: set[str] = set()
    for line in lines:
        path = line.split(":", 2)[-1].rstrip("/")  # "id:controllers:path"
        if line.count(":") >= 2 and f"/{PARENT}/" in path + "/" and not path.endswith(
                f"/{PARENT}"):
            inside.add(path)
    return sorted(inside)


def assert_outside_shaped_groups(pid: int | str = "self", proc: Path = Path("/proc")) -> None:
    """``RuntimeError`` when the load generator runs inside a shaped group: its own CPU would
    then count against the stand-in's quota and the figures would be wrong."""
    inside = shaped_groups_of(pid, proc)
    if inside:
        raise RuntimeError(
            f"the load generator (pid {os.getpid() if pid == 'self' else pid}) runs inside the"
            f" shaped cgroup(s) {inside}; start it outside every {PARENT} group")
