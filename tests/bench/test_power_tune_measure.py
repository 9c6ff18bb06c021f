"""Measuring a size with a fake Lambda: cold starts, the warm mix, the CPU probe, teardown.

``FakeLambda`` answers with REPORT figures like the Lambda invoker's: Init Duration on a
deployment's first call, a duration that grows as the CPU share falls below one vCPU, and,
when shaped, cumulative ``Usage`` readings. Time is a ``FakeClock``: nothing waits for real.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
from pydantic import Field

from bench.clock import FakeClock
from bench.level_usage import LevelUsage
from bench.power_tune import CpuProbe
from bench.power_tune_measure import (
    TuneSettings,
    measure_size,
    power_tune,
    probe_cpu,
    probe_note,
    report_of,
)
from bench.power_tune_mix import PayloadMix
from deployers.base import (
    CostDrivers,
    Deployer,
    Description,
    Endpoint,
    InvocationError,
    Prediction,
    Settings,
    Undo,
    Usage,
)


class FakeSettings(Settings):
    memory_mb: int = Field(1769, description="Memory size.")
    architecture: str = Field("x86_64", description="Architecture.")


class FakeLambda(Deployer[FakeSettings]):
    """An in-memory Lambda whose work per call is ``cpu_ms`` of one vCPU."""

    name: ClassVar[str] = "inprocess"  # a registered name whose provenance is measured-local
    settings_cls = FakeSettings

    def __init__(self, clock: FakeClock, shaped: bool = True, cpu_ms: float = 50.0,
                 fail_at: int | None = None, interrupt_at: int | None = None) -> None:
        self.clock, self.shaped, self.cpu_ms = clock, shaped, cpu_ms
        self.fail_at, self.interrupt_at = fail_at, interrupt_at
        self.live: dict[str, FakeSettings] = {}
        self.created: list[str] = []
        self.calls: dict[str, int] = {}
        self.cpu_s: dict[str, float] = {}

    def create(self, model_uri: str, settings: FakeSettings, name: str, undo: Undo) -> Endpoint:
        self.live[name] = settings
        self.created.append(name)
        self.calls[name], self.cpu_s[name] = 0, 0.0
        return Endpoint(self.name, name, model_uri, None, self.invoker(name), settings)

    def invoker(self, name: str) -> Any:
        def invoke(sessions: list[list[int]], k: int = 20) -> Prediction:
            self.calls[name] += 1
            total = sum(self.calls.values())
            if total == self.fail_at:
                raise InvocationError("the function failed (Runtime.ExitError)")
            if total == self.interrupt_at:
                raise KeyboardInterrupt
            share = min(1.0, self.live[name].memory_mb / 1769)
            duration = self.cpu_ms / share
            self.clock.advance(duration / 1000)
            self.cpu_s[name] += self.cpu_ms / 1000
            report = {"duration_ms": duration, "billed_ms": float(math.ceil(duration))}
            if self.calls[name] == 1:
                report["init_ms"] = 400.0
            rows = [{"items": [1], "scores": [1.0], "fallback": i == 0}
                    for i, _ in enumerate(sessions)]
            return Prediction([[1]] * len(sessions), [[1.0]] * len(sessions),
                              {"predictions": rows, "lambda_report": report})
        return invoke

    def usage(self, name: str) -> Usage | None:
        if not self.shaped:
            return None
        quota = self.live[name].memory_mb / 1769
        return Usage("cgroup-v1", 1, 1, quota, used_cpu_s=self.cpu_s[name])

    def describe(self, name: str) -> Description:
        return Description(self.name, name, "Active", CostDrivers(kind="lambda"))

    def teardown(self, name: str) -> None:
        self.live.pop(name, None)

    def list(self) -> list[str]:
        return sorted(self.live)


def mix(invocations: int = 10) -> PayloadMix:
    sessions = [[1] * n for n in range(1, 11) for _ in range(5)]
    return PayloadMix.build(sessions, batch=3, invocations=invocations, seed=0)


def settings(**kw: Any) -> TuneSettings:
    base: dict[str, Any] = dict(memory_mb=[512, 1769], invocations=10, warmup=2, cold_starts=3,
                                probe_s=2.0)
    return TuneSettings(**(base | kw))


def test_each_cold_start_is_the_first_call_of_a_fresh_deployment():
    clock = FakeClock()
    lam = FakeLambda(clock)
    m = measure_size(lam, "models:/m/1", 1769, mix(), settings(), clock)
    assert m.init_ms == (400.0, 400.0, 400.0)
    assert len(lam.created) == 3 and m.deployments == tuple(lam.created)
    assert lam.live == {}, "every deployment is torn down"
    assert [lam.calls[n] for n in lam.created[1:]] == [1, 1]  # the extra ones: one call each


def test_the_warm_mix_is_measured_after_the_cold_start_and_the_warm_up():
    clock = FakeClock()
    lam = FakeLambda(clock, cpu_ms=50.0)
    m = measure_size(lam, "models:/m/1", 512, mix(10), settings(cold_starts=1), clock)
    assert len(m.billed_ms) == 10 and m.classes == tuple(p.session_class for p in mix(10).payloads)
    assert set(m.billed_ms) == {math.ceil(50.0 / (512 / 1769))}  # no cold start among them
    assert (m.sessions, m.fallback_sessions) == (30, 10)  # the fake falls back on a row each
    assert m.provenance == "measured-local"


def test_the_probe_reads_usage_before_and_after_at_least_probe_s_of_calls():
    clock = FakeClock()
    lam = FakeLambda(clock, cpu_ms=50.0)
    m = measure_size(lam, "models:/m/1", 512, mix(), settings(cold_starts=1, probe_s=2.0),
                     clock)
    assert m.probe is not None
    assert m.probe.usage.wall_s >= 2.0
    # 50 ms of CPU per call stretched to 50 / 0.289 ms of wall: a share of 512 / 1769
    assert m.probe.usage.cpu_share == pytest.approx(512 / 1769)
    assert m.probe.usage.shaping == "cgroup-v1"
    assert m.probe.busy_fraction == pytest.approx(1.0)  # the fake has no client side
    assert probe_note(512, m.probe) is None, "the quota bound: nothing to explain"


def usage(share: float, quota: float, throttled: int) -> LevelUsage:
    return LevelUsage("cgroup-v1", 2.0, share * 2.0, quota, 1, 20, throttled, 0.0, 0.97)


def test_a_quota_that_did_not_bind_is_explained_by_idle_time_or_contention():
    idle = CpuProbe(usage(0.2, 0.289, 0), busy_s=1.0, invocations=40)  # busy half the time
    note = probe_note(512, idle)
    assert note is not None and "ran 50% of the CPU probe" in note
    busy = CpuProbe(usage(0.2, 0.289, 0), busy_s=1.95, invocations=40)
    note = probe_note(512, busy)
    assert note is not None and "contention" in note and "97% busy" in note
    assert probe_note(3008, CpuProbe(usage(1.0, 1.7, 0), 2.0, 40)) is None  # not meant to bind


def test_an_unshaped_deployment_is_not_probed():
    clock = FakeClock()
    lam = FakeLambda(clock, shaped=False)
    m = measure_size(lam, "models:/m/1", 1769, mix(), settings(cold_starts=1), clock)
    assert m.probe is None
    assert sum(lam.calls.values()) == 1 + 2 + 10  # cold start, warm-up, mix: no probe calls


def test_probe_makes_one_call_even_when_probe_s_has_passed_at_once():
    clock = FakeClock()
    lam = FakeLambda(clock, cpu_ms=1.0)
    endpoint = lam.deploy("models:/m/1", {"memory_mb": 1769})
    usage = probe_cpu(lam, endpoint, mix().heaviest(), 1e-9, 20, clock)
    assert usage is not None and lam.calls[endpoint.name] == 1


def test_a_failing_size_is_recorded_torn_down_and_the_next_size_measured():
    clock = FakeClock()
    lam = FakeLambda(clock, fail_at=5)
    outcomes = power_tune(lam, "models:/m/1", mix(), settings(cold_starts=1), clock)
    assert [o.memory_mb for o in outcomes] == [512, 1769]
    assert outcomes[0].measurement is None and "Runtime.ExitError" in (outcomes[0].error or "")
    assert outcomes[1].measurement is not None
    assert lam.live == {}


def test_ctrl_c_stops_the_run_after_teardown():
    clock = FakeClock()
    lam = FakeLambda(clock, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        power_tune(lam, "models:/m/1", mix(), settings(), clock)
    assert lam.live == {} and len(lam.created) == 1


def test_an_answer_without_a_report_line_is_an_invocation_error():
    with pytest.raises(InvocationError, match="REPORT"):
        report_of(Prediction([[1]], [[1.0]], {"predictions": []}))


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"memory_mb": [64]}, "outside Lambda's 128..10240"),
    ({"memory_mb": [512, 512]}, "repeat a size"),
    ({"memory_mb": []}, "at least 1"),
    ({"balanced_weight": 1.5}, "balanced_weight"),
    ({"architecture": "sparc"}, "architecture"),
])
def test_bad_tune_settings_are_refused(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        TuneSettings(**kw)
