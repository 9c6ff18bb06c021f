"""Resource shaping through cgroups: v1 and v2 on fake trees, the fallbacks, and one real group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from deployers.standins import shaping
from deployers.standins.shaping import Shape, ShapingError

V1_STAT = "nr_periods 40\nnr_throttled 12\nthrottled_time 1500000000\nnr_bursts 0\nburst_time 0\n"
V2_STAT = ("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 30\n"
           "nr_throttled 9\nthrottled_usec 750000\nnr_bursts 0\nburst_usec 0\n")
FIRST_CORE = str(min(os.sched_getaffinity(0)))


def _fake_rmdir(path: Path) -> None:
    """cgroupfs's rmdir: a group with no process goes away with its control files."""
    procs = path / "cgroup.procs"
    if procs.is_file() and procs.read_text().split():
        raise OSError(16, "Device or resource busy")
    if not path.is_dir():
        raise FileNotFoundError(path)
    shutil.rmtree(path)


@pytest.fixture(autouse=True)
def fake_rmdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shaping, "_rmdir", _fake_rmdir)


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    for controller in ("cpu", "cpuacct", "cpuset", "memory"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("1\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return tmp_path


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    (tmp_path / "cgroup.procs").write_text("1\n")
    return tmp_path


def _read(path: Path) -> str:
    return path.read_text().strip()


def test_v1_group_gets_quota_period_cpuset_memory_and_the_pid(v1_root: Path) -> None:
    backend = shaping.detect(v1_root, is_root=True)
    assert isinstance(backend, shaping.V1)
    group = backend.create("env-1", Shape(cpus=0.5, cores=1, memory_mb=512))
    cpu = v1_root / "cpu" / "niser-mlops" / "env-1"
    assert (_read(cpu / "cpu.cfs_period_us"), _read(cpu / "cpu.cfs_quota_us")) == (
        "100000", "50000")
    parent_set = v1_root / "cpuset" / "niser-mlops"
    assert (_read(parent_set / "cpuset.cpus"), _read(parent_set / "cpuset.mems")) == ("0-1", "0")
    cpuset = parent_set / "env-1"
    assert (_read(cpuset / "cpuset.cpus"), _read(cpuset / "cpuset.mems")) == (FIRST_CORE, "0")
    memory = v1_root / "memory" / "niser-mlops" / "env-1"
    assert _read(memory / "memory.limit_in_bytes") == str(512 * 2**20)
    group.add(4242)
    for controller in ("cpu", "cpuacct", "cpuset", "memory"):
        assert _read(v1_root / controller / "niser-mlops" / "env-1" / "cgroup.procs") == "4242"


def test_v1_cpu_only_shape_uses_no_cpuset_or_memory_group(v1_root: Path) -> None:
    group = shaping.V1(v1_root).create("srv", Shape(cpus=1.25))
    assert [d.parent.parent.name for d in group.dirs] == ["cpu", "cpuacct"]
    assert _read(group.dirs[0] / "cpu.cfs_quota_us") == "125000"


def test_v1_stat_reads_cpu_stat_and_cpuacct_usage(v1_root: Path) -> None:
    group = shaping.V1(v1_root).create("srv", Shape(cpus=0.5))
    (group.dirs[0] / "cpu.stat").write_text(V1_STAT)
    (group.dirs[1] / "cpuacct.usage").write_text("3250000000\n")
    assert group.stat() == shaping.CpuStat(40, 12, 1.5, 3.25)


def test_v2_group_enables_controllers_and_writes_cpu_max_cpuset_memory(
        v2_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enabled: list[tuple[str, str]] = []
    write = shaping._write

    def record(path: Path, value: str) -> None:
        if path.name == "cgroup.subtree_control":
            enabled.append((path.parent.name, value))
        write(path, value)

    monkeypatch.setattr(shaping, "_write", record)
    backend = shaping.detect(v2_root, is_root=True)
    assert isinstance(backend, shaping.V2)
    group = backend.create("env-2", Shape(cpus=0.289, cores=1, memory_mb=512))
    top = v2_root.name  # "memory" was already on at the top
    assert enabled == [(top, "+cpu"), (top, "+cpuset"), ("niser-mlops", "+cpu"),
                       ("niser-mlops", "+cpuset"), ("niser-mlops", "+memory")]
    d = v2_root / "niser-mlops" / "env-2"
    assert _read(d / "cpu.max") == "28900 100000"
    assert _read(d / "cpuset.cpus") == FIRST_CORE
    assert _read(d / "memory.max") == str(512 * 2**20)
    group.add(777)
    assert _read(d / "cgroup.procs") == "777"


def test_v2_stat_reads_usage_and_throttling(v2_root: Path) -> None:
    group = shaping.V2(v2_root).create("srv", Shape(cpus=2))
    (group.dirs[0] / "cpu.stat").write_text(V2_STAT)
    assert group.stat() == shaping.CpuStat(30, 9, 0.75, 2.5)


def test_remove_is_idempotent_and_refuses_while_processes_remain(v1_root: Path) -> None:
    group = shaping.V1(v1_root).create("srv", Shape(cpus=0.5))
    group.add(99)
    with pytest.raises(ShapingError, match="processes still in it"):
        group.remove(wait_s=0)
    for d in group.dirs:
        (d / "cgroup.procs").write_text("")
    group.remove()
    group.remove()
    assert not any(d.exists() for d in group.dirs)
    assert (v1_root / "cpu" / "niser-mlops").is_dir()


def test_group_record_round_trips_and_refuses_foreign_paths(v1_root: Path) -> None:
    group = shaping.V1(v1_root).create("srv", Shape(cpus=0.5))
    assert shaping.group_from_json(group.as_json()) == group
    with pytest.raises(ShapingError):
        shaping.group_from_json({"version": "cgroup-v1", "name": "srv", "dirs": ["/tmp/srv"]})


@pytest.mark.parametrize("name", ["../escape", "a/b", "/sys/fs/cgroup/cpu", "Upper", "", "x y"])
def test_group_names_that_are_not_plain_names_are_refused(v1_root: Path, name: str) -> None:
    with pytest.raises(ShapingError, match="cgroup name"):
        shaping.V1(v1_root).create(name, Shape(cpus=0.5))
    assert sorted(p.name for p in (v1_root / "cpu").iterdir()) == ["cgroup.procs",
                                                                   "cpu.cfs_period_us",
                                                                   "cpu.cfs_quota_us"]


def test_existing_group_name_is_refused(v1_root: Path) -> None:
    shaping.V1(v1_root).create("srv", Shape(cpus=0.5))
    with pytest.raises(ShapingError, match="already exists"):
        shaping.V1(v1_root).create("srv", Shape(cpus=0.5))


def test_detect_returns_none_when_not_root(v1_root: Path) -> None:
    assert shaping.detect(v1_root, is_root=False) is None


def test_detect_returns_none_without_a_cgroup_tree(tmp_path: Path) -> None:
    assert shaping.detect(tmp_path, is_root=True) is None


def test_detect_returns_none_when_the_tree_is_not_writable(
        v1_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shaping.os, "access", lambda path, mode: False)
    assert shaping.detect(v1_root, is_root=True) is None


def test_shape_rejects_nonpositive_cpus_and_too_many_cores() -> None:
    with pytest.raises(ValueError, match="cpus"):
        Shape(cpus=0)
    with pytest.raises(ShapingError, match="needs"):
        Shape(cores=len(os.sched_getaffinity(0)) + 1).core_list()


def _real_v1() -> bool:
    return os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu", os.W_OK) and Path(
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _real_v1(), reason="needs root and a writable cgroup v1 /sys/fs/cgroup/cpu")
def test_real_half_cpu_quota_holds_a_busy_loop_to_half_a_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shaping, "_rmdir", os.rmdir)
    backend = shaping.detect()
    assert backend is not None
    group = backend.create(f"test-{os.getpid()}", Shape(cpus=0.5))
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        group.add(child.pid)
        before, t0 = group.stat(), time.monotonic()
        time.sleep(1.5)  # the measurement window, not a bound
        after, t1 = group.stat(), time.monotonic()
    finally:
        child.kill()
        child.wait()
        group.remove()
    share = (after.used_cpu_s - before.used_cpu_s) / (t1 - t0)
    assert 0 < share <= 0.6
    assert after.throttled_periods > before.throttled_periods


def test_backend_warns_once_when_shaping_is_unavailable(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(shaping, "detect", lambda: None)
    shaping.backend.cache_clear()
    try:
        assert shaping.backend() is None and shaping.backend() is None
    finally:
        shaping.backend.cache_clear()
    warnings = [r for r in caplog.records if "shaping unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_several_instances_get_different_cores_wrapping_round() -> None:
    mine = sorted(os.sched_getaffinity(0))
    one = Shape(cores=1)
    assert [replace(one, first_core=i).core_list() for i in range(len(mine) + 1)] == [
        str(c) for c in mine] + [str(mine[0])]
    assert Shape(cores=len(mine), first_core=1).core_list() == ",".join(str(c) for c in mine)
