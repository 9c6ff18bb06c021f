"""Benchmark one deployment target end to end: deploy, time the cold start, sweep, tear down.

A target is a named deployer with its settings (``TargetSpec``). ``benchmark_target`` deploys the
model with ``deployer.deployed(...)`` so the endpoint is deleted whatever happens, measures the
time to the first successful answer, runs the closed-loop sweep and returns a ``TargetRun`` for
``bench.report.log_benchmark``. A failed deployment is returned as a failure, not raised, so one
broken target does not cost the measurements of the others. Where answers carry Lambda REPORT
figures (the Lambda invoker's ``raw["lambda_report"]``), the number of cold starts and their
init, billed and warm durations are logged with the target.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from bench import provenance
from bench.answers import AnswerSample
from bench.cold_start import cold_start
from bench.level_usage import assert_outside_shaped_groups
from bench.load_settings import LoadSettings, PayloadSource
from bench.report import TargetRun
from bench.sweep import SweepResult, sweep
from deployers.base import (
    Capacity,
    Description,
    Invoker,
    Prediction,
    Settings,
    SettingsError,
    UnknownDeployerError,
)
from deployers.registry import get_deployer

log = logging.getLogger(__name__)


class TargetSpec(Settings):
    """One deployment to benchmark: a display name, a registered deployer and its settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      description="Name shown in MLflow (letters, digits, '_', '.', '-').")
    deployer: str = Field(description="A registered deployer: see `deployers.available()`.")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="The deployer's own settings.")


class RecordingInvoker:
    """Passes calls through and keeps the Lambda REPORT figures answers carry (thread-safe)."""

    def __init__(self, invoke: Invoker, answers: AnswerSample | None = None) -> None:
        self.invoke = invoke
        self.answers = answers  # where a sample of the answers is kept, if anywhere
        self.sent = 0  # every request, the failed ones and the cold start's included
        self.reports: list[dict[str, float]] = []
        self._lock = threading.Lock()

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        with self._lock:
            self.sent += 1
        out = self.invoke(sessions, k)
        if self.answers is not None:
            self.answers.offer(sessions, k, out)
        report = out.raw.get("lambda_report") if isinstance(out.raw, dict) else None
        if report:
            with self._lock:
                self.reports.append(report)
        return out

    def metrics(self) -> dict[str, float]:
        """Requests sent; cold starts seen (new execution environments) and their init and
        billed durations."""
        with self._lock:
            reports, sent = list(self.reports), self.sent
        if not reports:
            return {"requests_sent": float(sent)}
        inits = [r["init_ms"] for r in reports if "init_ms" in r]
        out = {"requests_sent": float(sent), "lambda_reports": float(len(reports)),
               "lambda_cold_starts": float(len(inits))}
        if inits:
            out |= {"lambda_init_ms_mean": sum(inits) / len(inits), "lambda_init_ms_max": max(inits)}
        for field in ("billed_ms", "duration_ms"):
            values = [r[field] for r in reports if field in r]
            if values:
                out[f"lambda_{field}_mean"] = sum(values) / len(values)
        return out


@dataclass
class TargetOutcome:
    """A measured target, or why it could not be measured."""

    spec: TargetSpec
    run: TargetRun | None
    error: str | None = None


def validate_targets(specs: Sequence[Mapping[str, Any] | TargetSpec]) -> list[TargetSpec]:
    """Parse every target and its deployer settings before anything is deployed.

    A ``ValueError`` names the refused target by its place in the list, e.g.
    ``targets[1].deployer='nope': ...`` or ``targets[0].settings (x): ...``.
    """
    out = []
    for i, raw in enumerate(specs):
        try:
            spec = TargetSpec.parse(raw)
        except SettingsError as exc:
            raise ValueError(f"targets[{i}]: {exc}") from None
        try:
            get_deployer(spec.deployer).parse_settings(spec.settings)
        except UnknownDeployerError as exc:
            raise ValueError(f"targets[{i}].deployer={spec.deployer!r}: {exc}") from None
        except SettingsError as exc:
            raise ValueError(f"targets[{i}].settings ({spec.name}): {exc}") from None
        out.append(spec)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"target names must be unique, got {names}")
    return out


def limit_levels(levels: list[int], capacity: Capacity | None) -> tuple[list[int], str | None]:
    """The levels this machine can serve at the target's shape, and a sentence about the rest.

    Levels above ``capacity.concurrency`` are not measured (running them would share CPU the
    shape promises each request, so the figure would not be the target's); when every level is
    above it, the capacity itself is measured too (the last point of the curve).
    """
    if capacity is None:
        return list(levels), None
    kept = [lv for lv in levels if lv <= capacity.concurrency]
    skipped = [lv for lv in levels if lv > capacity.concurrency]
    if not skipped:
        return kept, None
    if capacity.concurrency not in kept:  # the curve runs up to what the machine holds
        kept.append(capacity.concurrency)
    return kept, (f"levels {', '.join(str(x) for x in skipped)} not measured: {capacity.reason}"
                  f" (at most {capacity.concurrency} at once)")


def benchmark_target(
    spec: TargetSpec, model_uri: str, payloads: PayloadSource, levels: list[int],
    load: LoadSettings, budget_s: float | None = None, cold_start_timeout_s: float = 120.0,
    stop: threading.Event | None = None, answers: AnswerSample | None = None,
) -> TargetOutcome:
    """Deploy ``model_uri`` to ``spec``, measure, always tear down.

    The load generator (this process) must be outside every shaped cgroup; a shaped stand-in's
    CPU is read around every level (``Deployer.usage``), and levels beyond what this machine
    can hold at the target's shape (``Deployer.capacity``) are left out, with a note saying so.
    Once ``stop`` is set (the run is being cancelled, ``bench.fanout``) nothing is deployed and
    the sweep starts no further level; what was deployed is torn down as always. With
    ``answers``, a sample of the sweep's answers is kept there (``bench.answers``).
    """
    if stop is not None and stop.is_set():
        return TargetOutcome(spec, None, "not started: the run is being cancelled")
    deployer = get_deployer(spec.deployer)
    started = time.perf_counter_ns()
    notes: dict[str, str] = {}
    try:
        assert_outside_shaped_groups()
        with deployer.deployed(model_uri, spec.settings) as endpoint:
            ready = time.perf_counter_ns()
            invoke = RecordingInvoker(endpoint.invoke)
            cold = cold_start(invoke, payloads.next_batch(), since_ns=ready,
                              timeout_s=cold_start_timeout_s, k=load.k)
            invoke.answers = answers  # the sweep's answers, not the cold start's
            description: Description = deployer.describe(endpoint.name)
            first = deployer.usage(endpoint.name)
            kept, skipped = limit_levels(levels, deployer.capacity(endpoint.name))
            if skipped:
                log.warning("target %s: %s", spec.name, skipped)
                notes["capacity_limit"] = skipped
            result: SweepResult = sweep(invoke, payloads, kept, load, budget_s,
                                        observe=lambda: deployer.usage(endpoint.name), stop=stop)
    except Exception as exc:  # one target's failure must not lose the others' figures
        log.exception("target %s failed", spec.name)
        return TargetOutcome(spec, None, f"{type(exc).__name__}: {exc}")
    held_s = (time.perf_counter_ns() - started) / 1e9  # deploy start to teardown end
    params = {"deployer": spec.deployer, "deploy_seconds": f"{(ready - started) / 1e9:.3f}"}
    source = provenance.of_target(spec.deployer)
    shaping = first.shaping if first is not None else (
        "aws" if source == "measured-real" else "none")
    run = TargetRun(spec.name, result, description, cold.seconds, source, load, params,
                    {**invoke.metrics(), "held_s": held_s}, shaping, notes)
    return TargetOutcome(spec, run)
