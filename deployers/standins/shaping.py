"""Resource shaping of stand-in processes through Linux cgroups (v1 or v2, found at run time).

A ``Shape`` is what a cloud target would give a process: a CPU quota (``cpus``, fractional:
quota = cpus * 100 ms per 100 ms period), the cores it may see (``cores``: N of the cores this
process may use, ``os.sched_getaffinity(0)``, starting at the ``first_core``-th, so that several
instances get different cores) and a memory limit (``memory_mb``).
Fields left ``None`` are not limited.

Promises:

- ``detect(root)`` returns the backend of the cgroup layout under ``root`` (``cgroup-v1``: one
  hierarchy per controller, ``cpu``, ``cpuacct``, ``cpuset``, ``memory``; ``cgroup-v2``: one
  unified tree), or ``None`` when this process is not root or the layout is absent or not
  writable. Callers then go on unshaped (``backend()`` warns once per process).
- Every group lives under one parent named ``niser-mlops`` at the top of each hierarchy, so
  nothing else on the machine is touched. A group's name follows ``GROUP_NAME`` and is never a
  path; ``create`` refuses a name that exists.
- ``Group.add(pid)`` moves a process into the group; children it forks later inherit it.
  ``Group.stat()`` reads the CPU it used and its throttling. ``Group.remove()`` moves nothing:
  it removes the group's directories once its processes have ended, and is idempotent.
- A group is recorded as JSON (``Group.as_json``, ``group_from_json``), so another process can
  read or remove it.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deployers.base import DeployerError, Usage

PARENT = "niser-mlops"
PERIOD_US = 100_000  # the CFS period of every quota: 100 ms
GROUP_NAME = re.compile(r"^[a-z0-9-]+$")
DEFAULT_ROOT = Path("/sys/fs/cgroup")
Version = Literal["cgroup-v1", "cgroup-v2"]

log = logging.getLogger(__name__)


class ShapingError(DeployerError):
    """A cgroup could not be created, joined or removed."""


def machine_cores() -> int:
    """The cores this process may use (``os.sched_getaffinity``): what any shape must fit in."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Shape:
    """The resources of one shaped group; ``None`` leaves that resource unlimited."""

    cpus: float | None = None  # CPU time per wall second (0.5: 50 ms of every 100 ms)
    cores: int | None = None  # N of the cores this process may use, from ``first_core`` on
    memory_mb: int | None = None
    first_core: int = 0  # where the N cores start (wrapping round), so instances can be spread

    def __post_init__(self) -> None:
        if self.cpus is not None and not self.cpus > 0:
            raise ValueError(f"cpus={self.cpus!r}: a CPU quota must be > 0")
        if self.cores is not None and self.cores < 1:
            raise ValueError(f"cores={self.cores!r}: at least one core")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ValueError(f"memory_mb={self.memory_mb!r}: at least 1 MB")

    @property
    def quota_us(self) -> int | None:
        """CPU microseconds per ``PERIOD_US`` period (``None``: no quota)."""
        return None if self.cpus is None else max(1000, round(self.cpus * PERIOD_US))

    def core_list(self) -> str:
        """The cores of ``cores`` in cpuset syntax ("0,1"): ``cores`` of the cores this process
        may use, from the ``first_core``-th on, wrapping round; ``ShapingError`` when too many."""
        mine = sorted(os.sched_getaffinity(0))
        n = self.cores or len(mine)
        if n > len(mine):
            raise ShapingError(f"the shape needs {n} cores; this process may use {len(mine)}")
        picked = sorted(mine[(self.first_core + j) % len(mine)] for j in range(n))
        return ",".join(str(c) for c in picked)


@dataclass(frozen=True)
class CpuStat:
    """CPU a group used and how often its quota stopped it (cumulative since it was made)."""

    periods: int  # CFS periods in which the group was runnable
    throttled_periods: int  # periods in which it hit its quota
    throttled_s: float  # total time its processes waited for the next period
    used_cpu_s: float  # CPU time its processes used


def parse_cpu_stat(text: str) -> dict[str, int]:
    """``cpu.stat`` ("key value" lines, either version) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise ShapingError(f"cannot write {value!r} to {path}: {exc}") from None


def _rmdir(path: Path) -> None:
    os.rmdir(path)


@dataclass(frozen=True)
class Group:
    """One shaped group: its directory in each hierarchy it uses."""

    version: Version
    name: str
    dirs: tuple[Path, ...]  # v1: cpu first, then cpuacct, cpuset, memory as used; v2: one

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """The processes in the group now."""
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def stat(self) -> CpuStat:
        """CPU used and throttling so far (v1: ``cpu.stat`` and ``cpuacct.usage``)."""
        stat = parse_cpu_stat((self.dirs[0] / "cpu.stat").read_text())
        if self.version == "cgroup-v2":
            return CpuStat(stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                           stat.get("throttled_usec", 0) / 1e6, stat.get("usage_usec", 0) / 1e6)
        usage_ns = int((self.dirs[1] / "cpuacct.usage").read_text().strip() or 0)
        return CpuStat(stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                       stat.get("throttled_time", 0) / 1e9, usage_ns / 1e9)

    def memory_peak_mb(self) -> int | None:
        """Peak memory charged to the group since it was made, in MB (v1
        ``memory.max_usage_in_bytes``, v2 ``memory.peak``); ``None`` without a memory limit."""
        for d in self.dirs:
            for key in ("memory.max_usage_in_bytes", "memory.peak"):
                if (d / key).is_file():
                    return math.ceil(int((d / key).read_text().strip() or 0) / 2**20)
        return None

    def oom_kills(self) -> int:
        """Processes of the group the kernel killed for memory so far (v1 ``memory.oom_control``
        ``oom_kill``, v2 ``memory.events`` ``oom_kill``); 0 without a memory limit."""
        for d in self.dirs:
            for key in ("memory.oom_control", "memory.events"):
                if (d / key).is_file():
                    return parse_cpu_stat((d / key).read_text()).get("oom_kill", 0)
        return 0

    def launch_argv(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped so that the process joins this group before it runs (a shell writes
        its own pid into each ``cgroup.procs``, then execs ``argv``): nothing runs unshaped."""
        joins = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(self.dirs)))
        script = f'{joins} && shift {len(self.dirs)} && exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *(str(d / "cgroup.procs") for d in self.dirs),
                *argv]

    def remove(self, wait_s: float = 5.0) -> None:
        """Remove the group once its processes have ended; idempotent. ``ShapingError`` when
        processes are still in it after ``wait_s``."""
        deadline = time.monotonic() + wait_s
        for d in self.dirs:
            while True:
                try:
                    _rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise ShapingError(
                            f"cannot remove cgroup {d}: {exc}; processes still in it:"
                            f" {self.pids()} (end them, then remove it again)") from None
                    time.sleep(0.05)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``group_from_json`` reads it back)."""
        return {"version": self.version, "name": self.name, "dirs": [str(d) for d in self.dirs]}


def group_from_json(raw: dict[str, Any]) -> Group:
    """The group recorded by ``Group.as_json``; its directories must be ``niser-mlops``'s."""
    dirs = tuple(Path(d) for d in raw["dirs"])
    name = check_group_name(str(raw["name"]))
    if not dirs or any(d.name != name or d.parent.name != PARENT for d in dirs):
        raise ShapingError(f"{raw!r} is not a {PARENT} cgroup record")
    return Group(raw["version"], name, dirs)


def check_group_name(name: str) -> str:
    """``name`` if it follows ``GROUP_NAME``; ``ShapingError`` otherwise (never a path)."""
    if not GROUP_NAME.match(name):
        raise ShapingError(f"cgroup name {name!r}: lowercase letters, digits and dashes only")
    return name


def _mkdir(path: Path) -> None:
    try:
        path.mkdir()
    except FileExistsError:
        raise ShapingError(f"cgroup {path} already exists; pick another name") from None
    except OSError as exc:
        raise ShapingError(f"cannot create cgroup {path}: {exc}") from None


class V1:
    """cgroup v1: a hierarchy per controller (``cpu``, ``cpuacct``, ``cpuset``, ``memory``)."""

    version: Version = "cgroup-v1"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _parent(self, controller: str) -> Path:
        top = self.root / controller
        parent = top / PARENT
        parent.mkdir(exist_ok=True)
        if controller == "cpuset":  # tasks may join only once cpus and mems are set
            for key in ("cpuset.cpus", "cpuset.mems"):
                f = parent / key
                if not f.is_file() or not f.read_text().strip():
                    _write(f, (top / key).read_text().strip())
        return parent

    def create(self, name: str, shape: Shape) -> Group:
        """A new group ``name`` shaped to ``shape``; see the module docstring."""
        check_group_name(name)
        used = ["cpu", "cpuacct"] + (["cpuset"] if shape.cores else [])
        used += ["memory"] if shape.memory_mb else []
        made: list[Path] = []
        try:
            for controller in used:
                d = self._parent(controller) / name
                if d.resolve() not in {m.resolve() for m in made}:  # "cpu,cpuacct" co-mounted
                    _mkdir(d)
                made.append(d)
                self._limit(controller, d, shape)
        except BaseException:
            Group(self.version, name, tuple(reversed(made))).remove(wait_s=0)
            raise
        return Group(self.version, name, tuple(made))

    @staticmethod
    def _limit(controller: str, d: Path, shape: Shape) -> None:
        if controller == "cpu" and shape.quota_us is not None:
            _write(d / "cpu.cfs_period_us", str(PERIOD_US))
            _write(d / "cpu.cfs_quota_us", str(shape.quota_us))
        elif controller == "cpuset":
            _write(d / "cpuset.cpus", shape.core_list())
            _write(d / "cpuset.mems", (d.parent / "cpuset.mems").read_text().strip())
        elif controller == "memory" and shape.memory_mb:
            _write(d / "memory.limit_in_bytes", str(shape.memory_mb * 2**20))
            if (d / "memory.memsw.limit_in_bytes").is_file():  # no swapping past the limit
                _write(d / "memory.memsw.limit_in_bytes", str(shape.memory_mb * 2**20))


class V2:
    """cgroup v2: one unified tree; controllers are enabled in each parent's subtree_control."""

    version: Version = "cgroup-v2"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _enable(self, d: Path, controllers: list[str]) -> None:
        have = (d / "cgroup.subtree_control").read_text().split() if (
            d / "cgroup.subtree_control").exists() else []
        for c in controllers:
            if c not in have:
                _write(d / "cgroup.subtree_control", f"+{c}")

    def create(self, name: str, shape: Shape) -> Group:
        """A new group ``name`` shaped to ``shape``; see the module docstring."""
        check_group_name(name)
        controllers = ["cpu"] + (["cpuset"] if shape.cores else [])
        controllers += ["memory"] if shape.memory_mb else []
        parent = self.root / PARENT
        parent.mkdir(exist_ok=True)
        self._enable(self.root, controllers)
        self._enable(parent, controllers)
        d = parent / name
        _mkdir(d)
        group = Group(self.version, name, (d,))
        try:
            if shape.quota_us is not None:
                _write(d / "cpu.max", f"{shape.quota_us} {PERIOD_US}")
            if shape.cores:
                _write(d / "cpuset.cpus", shape.core_list())
            if shape.memory_mb:
                _write(d / "memory.max", str(shape.memory_mb * 2**20))
                if (d / "memory.swap.max").is_file():
                    _write(d / "memory.swap.max", "0")
        except BaseException:
            group.remove(wait_s=0)
            raise
        return group


Backend = V1 | V2


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def detect(root: Path = DEFAULT_ROOT, is_root: bool | None = None) -> Backend | None:
    """The cgroup backend under ``root``, or ``None`` (not root, no layout, not writable)."""
    if not (os.geteuid() == 0 if is_root is None else is_root):
        return None
    if (root / "cgroup.controllers").is_file():
        return V2(root) if _writable(root) else None
    if all(_writable(root / c) for c in ("cpu", "cpuacct")) and (
            root / "cpu" / "cpu.cfs_quota_us").is_file():
        return V1(root)
    return None


@functools.cache
def backend() -> Backend | None:
    """This machine's backend (``detect()``), found once; warns once when there is none."""
    found = detect()
    if found is None:
        log.warning("resource shaping unavailable (needs root and a writable cgroup tree at %s);"
                    " stand-ins run unshaped and are tagged shaping=none", DEFAULT_ROOT)
    return found


def usage(version: str, groups: list[Group], quota_cpus: float | None,
          ended: CpuStat | None = None, ended_groups: int = 0) -> Usage:
    """The summed reading of ``groups`` (plus ``ended``: the last readings of groups already
    removed, ``ended_groups`` of them) as the deployers' ``Usage``."""
    stats = [g.stat() for g in groups] + ([ended] if ended is not None else [])
    return Usage(version, len(groups) + ended_groups, len(groups), quota_cpus,
                 sum(s.periods for s in stats), sum(s.throttled_periods for s in stats),
                 sum(s.throttled_s for s in stats), sum(s.used_cpu_s for s in stats))


def add_stats(a: CpuStat, b: CpuStat) -> CpuStat:
    """Two readings summed (to keep an ended group's last reading in a running total)."""
    return CpuStat(a.periods + b.periods, a.throttled_periods + b.throttled_periods,
                   a.throttled_s + b.throttled_s, a.used_cpu_s + b.used_cpu_s)
