"""The Lambda stand-in shaped like Lambda: the shape rule (pure), each environment in its own
cgroup from its first instruction, Lambda's out-of-memory failure, Max Memory Used from the
cgroup, usage and capacity, and the unshaped fallback."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from deployers.aws_lambda.invoker import parse_report
from deployers.standins import FunctionConfig, LocalLambda, lambda_service
from deployers.standins.lambda_invoke_api import Report
from deployers.standins.lambda_shape import capacity, group_name, lambda_shape
from deployers.standins.shaping import GROUP_NAME, ShapingError, detect
from tests.deployers.lambda_support import toy_package

CGROUP = Path("/sys/fs/cgroup")
HANDLER = """
    import os, time
    BORN_IN = open("/proc/self/cgroup").read()  # read at import: before any request
    HELD = []

    def handler(event, context):
        if event.get("allocate_mb"):  # touched, so every page is charged
            HELD.append(b"\\x01" * (event["allocate_mb"] << 20))
        if event.get("spin_cpu_s"):
            end = time.process_time() + event["spin_cpu_s"]
            while time.process_time() < end:
                pass
        if event.get("exit"):
            os._exit(3)
        return {"pid": os.getpid(), "born_in": BORN_IN}
"""
shaped_only = pytest.mark.skipif(
    detect() is None, reason="needs root and a writable cgroup v1 or v2 tree at /sys/fs/cgroup")


@pytest.fixture
def service():
    with LocalLambda(shaped=None) as svc:
        yield svc


def call(svc: LocalLambda, name: str, event: dict) -> tuple[dict, str | None, dict, str]:
    """One invoke: its payload, its function error, its REPORT numbers and REPORT line."""
    result = svc.invoke(name, json.dumps(event).encode())
    line = result.log.splitlines()[-1]
    return json.loads(result.payload), result.function_error, parse_report(line), line


def group_dirs(proc_cgroup: str) -> list[Path]:
    """The directories of the niser-mlops group that a /proc/<pid>/cgroup text names."""
    dirs = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if "/niser-mlops/" in path:
            dirs.append(CGROUP / (controllers or "") / path.lstrip("/"))
    return dirs


@pytest.mark.parametrize(("memory_mb", "cpus", "cores"), [
    (128, 0.0724, 2), (512, 0.289, 2), (1769, 1.0, 2), (3008, 1.700, 2), (3009, 1.701, 3),
    (4000, 2.261, 3), (5307, 3.0, 3), (5308, 3.001, 4), (7076, 4.0, 4), (8845, 5.0, 5),
    (8846, 5.001, 6), (10240, 5.789, 6)])
def test_lambda_shape_is_one_vcpu_per_1769_mb_with_lambdas_core_steps(memory_mb, cpus, cores):
    shape = lambda_shape(memory_mb, machine_cores=8)
    assert shape.cpus == pytest.approx(cpus, abs=5e-4)
    assert (shape.cores, shape.memory_mb) == (cores, memory_mb)


def test_lambda_shape_caps_visible_cores_at_this_machines_but_keeps_the_quota():
    shape = lambda_shape(10240, machine_cores=2)
    assert shape.cores == 2 and shape.cpus == pytest.approx(5.789, abs=5e-4)
    assert lambda_shape(4000, machine_cores=1).cores == 1


def test_capacity_of_512_mb_on_2_cores_is_6_cpu_bound():
    got = capacity(512, machine_cores=2, mem_available_mb=20_000)  # 2 / 0.2894 = 6.9
    assert got.concurrency == 6 and got.reason.startswith("CPU bound")


def test_capacity_of_128_mb_with_1000_mb_available_is_6_memory_bound():
    got = capacity(128, machine_cores=16, mem_available_mb=1000)  # 800 / 128 = 6.25
    assert got.concurrency == 6 and got.reason.startswith("memory bound")


def test_capacity_is_at_least_one_even_when_one_environment_does_not_fit():
    got = capacity(10240, machine_cores=2, mem_available_mb=4000)
    assert got.concurrency == 1 and "does not fit" in got.reason


def test_group_names_are_sanitised_function_names_with_id_and_random_hex():
    name = group_name("My_Func.v2", 7)
    assert GROUP_NAME.match(name) and name.startswith("lambda-my-func-v2-7-")
    assert group_name("My_Func.v2", 7) != name


def test_report_line_of_an_out_of_memory_kill_ends_like_lambdas():
    report = Report("rid", "fn", 1, "error", 10.0, 11, 128, 128, None, "Runtime.OutOfMemory")
    assert report.line().endswith("Max Memory Used: 128 MB\tStatus: error\t"
                                  "Error Type: Runtime.OutOfMemory")


def test_unshaped_service_reports_vmhwm_and_no_usage_or_capacity(tmp_path):
    with LocalLambda(shaped=False) as svc:
        svc.add_function(FunctionConfig("toy", toy_package(tmp_path, HANDLER), memory_mb=256,
                                        timeout_s=30))
        body, error, report, _ = call(svc, "toy", {"allocate_mb": 40})
        assert error is None and "/niser-mlops/" not in body["born_in"]
        assert report["max_memory_mb"] >= 40, "the process's peak resident set"
        assert svc.shaping == "none" and svc.shape("toy") is None
        assert svc.usage("toy") is None and svc.capacity("toy") is None


def test_shaped_true_on_a_machine_without_cgroups_is_refused(monkeypatch):
    monkeypatch.setattr(lambda_service, "backend", lambda: None)
    with pytest.raises(ShapingError, match="shaped=True"):
        LocalLambda(shaped=True)


@shaped_only
def test_environment_starts_in_its_own_lambda_shaped_group_which_goes_with_the_function(
        service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, HANDLER), memory_mb=512,
                                        timeout_s=30))
    body, error, _, _ = call(service, "toy", {})
    assert error is None
    dirs = group_dirs(body["born_in"])
    assert dirs, f"the handler module was imported outside a group: {body['born_in']}"
    assert {d.name for d in dirs} == {dirs[0].name} and dirs[0].name.startswith("lambda-toy-")
    assert group_dirs(Path(f"/proc/{body['pid']}/cgroup").read_text()) == dirs
    assert all(d.is_dir() for d in dirs)
    if service.shaping == "cgroup-v1":
        by_controller = {d.parent.parent.name: d for d in dirs}
        assert (by_controller["cpu"] / "cpu.cfs_quota_us").read_text().strip() == str(
            round(512 / 1769 * 100_000))
        assert (by_controller["memory"] / "memory.limit_in_bytes").read_text().strip() == str(
            512 * 2**20)
        assert len((by_controller["cpuset"] / "cpuset.cpus").read_text().strip()) > 0
    service.remove_function("toy")
    assert not any(d.exists() for d in dirs)


@shaped_only
def test_out_of_memory_fails_like_lambda_and_the_next_invoke_is_a_cold_start(service,
                                                                           tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, HANDLER), memory_mb=128,
                                        timeout_s=30))
    warm, _, _, _ = call(service, "toy", {})
    result = service.invoke("toy", json.dumps({"allocate_mb": 300}).encode())
    rid = result.report.request_id
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload) == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: signal: killed"}
    line = result.log.splitlines()[-1]
    assert line.startswith(f"REPORT RequestId: {rid}")
    assert line.endswith("Status: error\tError Type: Runtime.OutOfMemory")
    assert parse_report(line)["max_memory_mb"] >= 120, "killed at its 128 MB limit"
    assert service.environments("toy") == 0, "the killed environment is discarded"
    with pytest.raises(ProcessLookupError):
        os.kill(warm["pid"], 0)
    fresh, error, report, _ = call(service, "toy", {})
    assert error is None and fresh["pid"] != warm["pid"]
    assert report["init_ms"] > 0, "a cold start"
    assert service.reports[-1].environment != result.report.environment


@shaped_only
def test_out_of_memory_during_init_fails_the_invocation_like_lambda(service, tmp_path):
    package = toy_package(tmp_path, "HOG = b'\\x01' * (300 << 20)\ndef handler(e, c):\n"
                                    "    return 1\n")
    service.add_function(FunctionConfig("hog", package, memory_mb=128, timeout_s=30))
    result = service.invoke("hog", b"{}")
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Runtime.OutOfMemory"
    assert result.log.splitlines()[-1].endswith("Status: error\tError Type: Runtime.OutOfMemory")
    assert service.environments("hog") == 0


@shaped_only
def test_max_memory_used_is_the_groups_peak(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, HANDLER), memory_mb=256,
                                        timeout_s=30))
    body, _, report, _ = call(service, "toy", {"allocate_mb": 60})
    peaks = [d / name for d in group_dirs(body["born_in"])
             for name in ("memory.max_usage_in_bytes", "memory.peak") if (d / name).is_file()]
    peak_mb = math.ceil(int(peaks[0].read_text()) / 2**20)
    assert 60 <= report["max_memory_mb"] <= peak_mb <= report["max_memory_mb"] + 2
    rss = service.reports[-1].peak_rss_mb
    assert rss is not None and rss >= 60, "the process's VmHWM rides along for comparison"


@shaped_only
def test_usage_grows_with_invocations_and_keeps_discarded_environments_cpu(service, tmp_path):
    service.add_function(FunctionConfig("toy", toy_package(tmp_path, HANDLER), memory_mb=512,
                                        timeout_s=30))
    call(service, "toy", {})
    first = service.usage("toy")
    assert first is not None and (first.groups, first.live) == (1, 1)
    assert first.shaping == service.shaping and first.quota_cpus == pytest.approx(512 / 1769)
    call(service, "toy", {"spin_cpu_s": 0.2})
    spun = service.usage("toy")
    assert spun is not None and spun.since(first).used_cpu_s >= 0.19
    assert spun.since(first).throttled_periods > 0, "0.2 s of CPU at a 0.289 quota is throttled"
    call(service, "toy", {"exit": True})
    gone = service.usage("toy")
    assert gone is not None and (gone.groups, gone.live) == (1, 0)
    assert gone.used_cpu_s >= spun.used_cpu_s, "a discarded environment keeps its reading"
    call(service, "toy", {})
    again = service.usage("toy")
    assert again is not None and (again.groups, again.live) == (2, 1)
    assert again.used_cpu_s > gone.used_cpu_s
    cap = service.capacity("toy")
    assert cap is not None and cap.concurrency >= 1 and "bound" in cap.reason
