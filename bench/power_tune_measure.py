"""Measuring one memory size of a power-tuning run: deploy, cold starts, warm mix, CPU probe.

``measure_size`` deploys the model with the Lambda deployer at ``memory_mb`` inside
``deployer.deployed(...)``, so the function is deleted whatever happens (an error, Ctrl-C), and:

1. cold start: the first invocation's REPORT ``Init Duration``. A freshly created function has
   no execution environment, so its first invocation always starts one. ``cold_starts`` N > 1
   deploys the size N times; the first deployment also serves steps 2-4, the others are torn
   down after their first answer. Redeploying is what works alike on real Lambda and on the
   stand-in: publishing a new version after a configuration update also forces new
   environments on Lambda, but the stand-in hosts a function's package once and does not follow
   configuration updates; N concurrent first invocations start N environments on both, but on
   the stand-in their Inits would compete for this machine's cores and read slow. On AWS each
   extra deployment costs seconds of API calls (role, function, version, alias) and no charge.
2. warm-up: ``warmup`` invocations of the mix's first payloads (not measured);
3. the mix: every payload of the ``PayloadMix`` once, in order, one at a time (sequential: one
   warm environment serves them all, as Power Tuning's serial mode does); each answer's REPORT
   gives Billed Duration and Duration;
4. CPU probe: ``Deployer.usage`` before and after back-to-back invocations of the heaviest
   payload, repeated until ``probe_s`` seconds have passed (at least one), as a
   ``bench.level_usage.LevelUsage`` at one request in flight (share = CPU s / wall s, throttled
   periods, how busy the whole machine was) and the handler's busy time. Below 1,769 MB the
   quota is meant to bind; when it did not (``LevelUsage.bound`` false), ``probe_note`` says
   why: the handler idled through the client's round trips, or the machine's contention held
   it back. Skipped when usage is ``None`` (real AWS, an
   unshaped stand-in): nothing could read the CPU it used. This process must run outside every
   shaped group (``assert_outside_shaped_groups``), or its CPU would count against the quota.

Why a batch of sessions per invocation, and how big: a CFS quota lets a group use ``share * 100
ms`` of CPU per 100 ms period, then holds it until the next period. An invocation that needs
less CPU than one period's quota (29 ms at 512 MB) runs at full speed unless earlier work in the
same period spent the quota, so one session per request (2-3 ms of CPU) bills about the same ms
at 512 MB as at 3,008 MB and cannot show the CPU share: the cost pick would be the smallest size
by construction. The default batch, 200 sessions, is sized so that one invocation needs more
than the smaller sizes' quota: a Diginetica-size model (43,098 x 100, one onnxruntime thread)
spends 40 ms (short sessions) to 52 ms (long ones) of CPU per 200-session request on one core
of the development machine (in-process ``niser.lambda_handler.Model.recommend``), over 512 MB's
29 ms per period and near 1,024 MB's 58 ms. A smaller model does less per session: raise
``batch`` until the 1,769 MB row bills tens of ms.

Failures: an invocation error ends the size (``InvocationError`` propagates after teardown);
``power_tune`` records it and goes on with the next size, so one size that cannot run (e.g. too
little memory for the model) does not cost the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from bench import provenance
from bench.clock import MONOTONIC, Clock
from bench.cost import LAMBDA_MEMORY_MB
from bench.level_usage import LevelUsage, MachineTimes, assert_outside_shaped_groups, machine_times
from bench.power_tune import (
    DEFAULT_BALANCED_WEIGHT,
    DEFAULT_MEMORY_MB,
    CpuProbe,
    SizeMeasurement,
    SizeOutcome,
)
from bench.power_tune_mix import MixedPayload, PayloadMix
from deployers.base import Deployer, Endpoint, InvocationError, Prediction, Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH = 200
"""Sessions per invocation (the module docstring says why)."""

BUSY_MIN = 0.9
"""A probe whose handler ran less than this share of its wall time could not make the quota
bind: the client's round trips, not contention, kept the share low."""


class TuneSettings(Settings):
    """How a power-tuning run measures each memory size."""

    memory_mb: list[int] = Field(default_factory=lambda: list(DEFAULT_MEMORY_MB),
                                 min_length=1, description="Memory sizes to measure, MB.")
    architecture: Literal["x86_64", "arm64"] = Field("x86_64", description="CPU architecture.")
    invocations: int = Field(50, ge=1, description="Warm invocations of the mix per size.")
    warmup: int = Field(5, ge=0, description="Unmeasured invocations before the mix.")
    cold_starts: int = Field(3, ge=1, description="Cold starts per size (a deployment each).")
    batch: int = Field(DEFAULT_BATCH, ge=1, le=10_000, description="Sessions per invocation.")
    probe_s: float = Field(2.0, gt=0, description="Length of the CPU probe, seconds.")
    k: int = Field(20, ge=1, le=1000, description="Top-k asked per session.")
    seed: int = Field(0, description="Seed of the payload mix.")
    balanced_weight: float = Field(DEFAULT_BALANCED_WEIGHT, ge=0, le=1,
                                   description="Power Tuning's balancedWeight (0 speed, 1 cost).")

    @field_validator("memory_mb")
    @classmethod
    def _lambda_sizes(cls, sizes: list[int]) -> list[int]:
        lo, hi = LAMBDA_MEMORY_MB
        bad = [m for m in sizes if not lo <= m <= hi]
        if bad:
            raise ValueError(f"memory sizes {bad} are outside Lambda's {lo}..{hi} MB")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"memory sizes {sizes} repeat a size; give each once")
        return sizes


def report_of(pred: Prediction) -> dict[str, float]:
    """The REPORT figures an answer carries (``raw["lambda_report"]``); ``InvocationError`` when
    it has no Billed Duration (an invoker that is not the Lambda one)."""
    report = pred.raw.get("lambda_report") if isinstance(pred.raw, dict) else None
    if not report or "billed_ms" not in report:
        raise InvocationError("the answer carries no Lambda REPORT line (Billed Duration): "
                              "power tuning needs the Lambda invoker's raw['lambda_report']")
    return dict(report)


def fallbacks(pred: Prediction) -> int:
    """Sessions of an answer that got the popularity fallback (none of their items known)."""
    rows = pred.raw.get("predictions", []) if isinstance(pred.raw, dict) else []
    return sum(1 for r in rows if isinstance(r, dict) and r.get("fallback"))


def _cold_start(endpoint: Endpoint, payload: MixedPayload, k: int) -> float:
    return report_of(endpoint.invoke(payload.sessions, k)).get("init_ms", math.nan)


def probe_cpu(deployer: Deployer[Any], endpoint: Endpoint, payload: MixedPayload, seconds: float,
              k: int, clock: Clock = MONOTONIC, machine: MachineTimes = machine_times
              ) -> CpuProbe | None:
    """CPU used by ``endpoint``'s groups over back-to-back invocations of ``payload`` lasting
    at least ``seconds`` (one invocation at least), with the handler's busy time (sum of
    REPORT Duration); ``None`` when ``usage`` is ``None``. ``RuntimeError`` when this process
    runs inside a shaped group (its CPU would count against the quota)."""
    before = deployer.usage(endpoint.name)
    if before is None:
        return None
    assert_outside_shaped_groups()
    m0, start = machine(), clock.now_ns()
    count, busy_ms = 0, 0.0
    while count == 0 or clock.now_ns() - start < seconds * 1e9:
        busy_ms += report_of(endpoint.invoke(payload.sessions, k)).get("duration_ms", 0.0)
        count += 1
    wall, m1 = (clock.now_ns() - start) / 1e9, machine()
    after = deployer.usage(endpoint.name)
    if after is None:
        return None
    return CpuProbe(LevelUsage.between(before, after, wall, m0, m1), busy_ms / 1000, count)


def probe_note(memory_mb: int, probe: CpuProbe) -> str | None:
    """A sentence when the quota was meant to bind in the probe (below 1,769 MB) but did not:
    the handler idled through the client's round trips (busy under ``BUSY_MIN`` of the time),
    or the machine's contention held it back. ``None`` otherwise."""
    u = probe.usage
    if not u.meant_to_bind(1, "closed") or u.bound:
        return None
    if probe.busy_fraction < BUSY_MIN:
        return (f"{memory_mb} MB: the handler ran {probe.busy_fraction:.0%} of the CPU probe "
                "(the rest was the client's side of each round trip), so its measured share "
                f"({u.cpu_share:.3f}) reads below its quota ({u.quota_total:.3f} CPU)")
    return (f"{memory_mb} MB: the CPU quota ({u.quota_total:.3f} CPU) was meant to bind but the "
            f"function used {u.cpu_share:.3f} CPU with the machine {u.machine_busy:.0%} busy: "
            "contention, not the shape, limited it")


def measure_size(deployer: Deployer[Any], model_uri: str, memory_mb: int, mix: PayloadMix,
                 s: TuneSettings, clock: Clock = MONOTONIC,
                 progress: Callable[[str], None] = log.info) -> SizeMeasurement:
    """Deploy ``model_uri`` at ``memory_mb`` and measure it (module docstring); every
    deployment is torn down before this returns or raises."""
    settings = {"memory_mb": memory_mb, "architecture": s.architecture}
    first = mix.payloads[0]
    inits: list[float] = []
    billed: list[float] = []
    durations: list[float] = []
    names: list[str] = []
    fell_back = sessions = 0
    probe = None
    progress(f"{memory_mb} MB: deploying")
    with deployer.deployed(model_uri, settings) as endpoint:
        names.append(endpoint.name)
        inits.append(_cold_start(endpoint, first, s.k))
        for i in range(s.warmup):
            endpoint.invoke(mix.payloads[i % len(mix.payloads)].sessions, s.k)
        progress(f"{memory_mb} MB: {len(mix.payloads)} invocations of the mix")
        for payload in mix.payloads:
            pred = endpoint.invoke(payload.sessions, s.k)
            report = report_of(pred)
            billed.append(report["billed_ms"])
            durations.append(report.get("duration_ms", math.nan))
            fell_back += fallbacks(pred)
            sessions += len(payload.sessions)
        probe = probe_cpu(deployer, endpoint, mix.heaviest(), s.probe_s, s.k, clock)
        note = probe_note(memory_mb, probe) if probe is not None else None
        if note:
            progress(note)
    for n in range(2, s.cold_starts + 1):
        progress(f"{memory_mb} MB: cold start {n} of {s.cold_starts} (a fresh deployment)")
        with deployer.deployed(model_uri, settings) as endpoint:
            names.append(endpoint.name)
            inits.append(_cold_start(endpoint, first, s.k))
    return SizeMeasurement(
        memory_mb=memory_mb, architecture=s.architecture, init_ms=tuple(inits),
        billed_ms=tuple(billed), duration_ms=tuple(durations),
        classes=tuple(p.session_class for p in mix.payloads), fallback_sessions=fell_back,
        sessions=sessions, probe=probe, provenance=provenance.of_target(deployer.name),
        deployments=tuple(names))


def power_tune(deployer: Deployer[Any], model_uri: str, mix: PayloadMix, s: TuneSettings,
               clock: Clock = MONOTONIC, progress: Callable[[str], None] = log.info
               ) -> list[SizeOutcome]:
    """``measure_size`` for every size of ``s``, in order; a size that fails is recorded with
    its error and the next one is measured (Ctrl-C stops the run, after teardown)."""
    out = []
    for memory in s.memory_mb:
        try:
            out.append(SizeOutcome(memory, measure_size(deployer, model_uri, memory, mix, s,
                                                        clock, progress)))
        except Exception as exc:  # one size's failure must not lose the others' figures
            log.exception("power tuning %s MB failed", memory)
            out.append(SizeOutcome(memory, None, f"{type(exc).__name__}: {exc}"))
    return out
