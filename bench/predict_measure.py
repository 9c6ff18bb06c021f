"""Measure the shapes ``niser-mlops predict-check`` fits and predicts, on this machine.

Shapes (``PLAN``): the local deployer at ``cpus`` 0.5 and 1 (fitted), ``cpus`` 2 with two
workers and 2 instances x 1 CPU behind the balancer (held out); the Lambda stand-in at 512 and
1024 MB (fitted) and 1769 MB (held out). Each is deployed, swept closed loop with
``bench.targets.benchmark_target`` (levels above what the machine holds at the shape are left
out, as in every benchmark) and torn down. The CPU figures of its busiest level give the host
the model needs (``perfmodel.Host``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import perfmodel as pm
from bench.level import LevelResult, cores
from bench.load_settings import LoadSettings, PayloadSource
from bench.predict_check import Measured, Role
from bench.report import TargetRun
from bench.targets import TargetSpec, benchmark_target


@dataclass(frozen=True)
class PlannedShape:
    spec: TargetSpec
    role: Role
    shape: pm.Shape | None = None
    memory_mb: int | None = None


def _local(name: str, role: Role, cpus: float, workers: int, instances: int) -> PlannedShape:
    settings = {"cpus": cpus, "workers": workers, "torch_threads": 1, "instances": instances}
    return PlannedShape(TargetSpec(name=name, deployer="local", settings=settings), role,
                        shape=pm.Shape(cpus, workers, instances))


def _lambda(memory_mb: int, role: Role) -> PlannedShape:
    return PlannedShape(TargetSpec(name=f"lambda-{memory_mb}mb", deployer="lambda",
                                   settings={"memory_mb": memory_mb}), role, memory_mb=memory_mb)


PLAN: tuple[PlannedShape, ...] = (
    _local("local-1x0.5cpu", "fit", 0.5, 1, 1),
    _local("local-1x1cpu", "fit", 1.0, 1, 1),
    _local("local-1x2cpu", "held-out", 2.0, 2, 1),
    _local("local-2x1cpu", "held-out", 1.0, 1, 2),
    _lambda(512, "fit"),
    _lambda(1024, "fit"),
    _lambda(1769, "held-out"),
)

QUICK_LEVELS = [1, 2, 4, 8, 16]
FULL_LEVELS = [1, 2, 3, 4, 6, 8, 11, 16]
QUICK_LOAD = LoadSettings(warmup_s=1.0, duration_s=3.0, timeout_s=10.0)
FULL_LOAD = LoadSettings(warmup_s=2.0, duration_s=10.0, timeout_s=10.0)


def host_of(levels: Sequence[LevelResult]) -> pm.Host:
    """The CPU figures of the busiest level: the stand-in's and the generator's CPU per request
    and the cores the rest of the machine used (``perfmodel.Host``)."""
    n = cores()
    best = max(levels, key=lambda lv: lv.stats().throughput_rps)
    x = best.stats().throughput_rps
    client = best.cpu_fraction * n
    if best.usage is None or not x > 0:
        return pm.Host(float(n), 0.0, 1000.0 * client / x if x > 0 else math.nan, math.nan)
    target = best.usage.cpu_share
    background = max(0.0, best.usage.machine_busy * n - target - client)
    return pm.Host(float(n), background, 1000.0 * client / x, 1000.0 * target / x,
                   1000.0 * background / x)


def levels_with_cpu(levels: Sequence[LevelResult]) -> tuple[pm.Level, ...]:
    """The levels that answered, each with the stand-in's CPU per answered request where its
    usage was read (``perfmodel.Level.cpu_ms``)."""
    stats = [lv.stats() for lv in levels]
    return pm.levels_of(stats, [1000.0 * lv.usage.cpu_share / st.throughput_rps
                                if lv.usage is not None and st.throughput_rps > 0 else None
                                for lv, st in zip(levels, stats, strict=True)])


def to_measured(planned: PlannedShape, run: TargetRun) -> Measured:
    levels = levels_with_cpu(run.sweep.levels)
    if not levels:
        raise RuntimeError(f"{planned.spec.name}: no level answered "
                           f"({run.sweep.stopped_reason or 'no successful request'})")
    return Measured(planned.spec.name, planned.role, levels, host_of(run.sweep.levels),
                    planned.shape, planned.memory_mb, run.metrics.get("lambda_billed_ms_mean"),
                    run.metrics.get("lambda_duration_ms_mean"))


def measure(model_uri: str, payloads: PayloadSource, quick: bool,
            progress: Callable[[str], None] = lambda _: None,
            plan: Sequence[PlannedShape] = PLAN) -> tuple[list[Measured], list[TargetRun]]:
    """Deploy, sweep and tear down every planned shape in turn; a shape that fails raises
    (the check cannot be judged without it)."""
    levels, load = (QUICK_LEVELS, QUICK_LOAD) if quick else (FULL_LEVELS, FULL_LOAD)
    out, runs = [], []
    for planned in plan:
        progress(f"{planned.spec.name} ({planned.role}): deploying and sweeping "
                 f"{','.join(map(str, levels))} users")
        outcome = benchmark_target(planned.spec, model_uri, payloads, levels, load)
        if outcome.run is None:
            raise RuntimeError(f"{planned.spec.name}: {outcome.error}")
        out.append(to_measured(planned, outcome.run))
        runs.append(outcome.run)
    return out, runs
