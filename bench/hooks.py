"""What a benchmark hook sees and returns: the measured targets' summaries in, figures out.

A hook (``BenchmarkHook``) turns the summaries of every measured target into figures, tables,
files and metrics that ``bench.report.log_benchmark`` logs with the benchmark; the cost model
(``bench.report_cost``) and the recommendation (``bench.report_recommend``) are hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bench.provenance import Provenance
from bench.stats import LevelStats
from deployers.base import Description


@dataclass(frozen=True)
class TargetSummary:
    """What hooks see of one target: its statistics per level and its cost drivers."""

    name: str
    mode: str
    stats: list[LevelStats]
    saturation_rps: float | None
    cold_start_s: float | None
    description: Description | None
    provenance: Provenance
    metrics: dict[str, float] = field(default_factory=dict)  # TargetRun.metrics
    shaping: str = "none"  # TargetRun.shaping

    def billed_ms(self, latency_ms: float) -> float:
        """Billed duration per request: the platform's own figure when it reported one (Lambda
        REPORT lines), else the client-side latency (an over-estimate: it includes transport)."""
        return self.metrics.get("lambda_billed_ms_mean", latency_ms)


@dataclass
class HookOutput:
    """What a hook adds. ``step_metrics``: target -> metric -> [(level, value)];
    ``summary_metrics``: target -> metric -> value; ``figures`` (artifact path -> figure),
    ``tables`` (artifact path -> frame), ``files`` ((artifact dir, local file) pairs, written
    under the hook's ``workdir``), ``parent_metrics`` and ``parent_tags`` go to the parent run.
    ``headline`` (one line of markdown) and ``note`` (markdown paragraphs) go into the parent
    run's description (``bench.report_note``): headlines first, notes after, in hook order."""

    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)
    step_metrics: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    summary_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    parent_metrics: dict[str, float] = field(default_factory=dict)
    parent_tags: dict[str, str] = field(default_factory=dict)
    headline: str | None = None
    note: list[str] = field(default_factory=list)


BenchmarkHook = Callable[[list[TargetSummary], float, Path], HookOutput]
"""``hook(summaries, slo_ms, workdir) -> HookOutput``: cost per 1M inferences, break-even plots.
``workdir`` is a scratch directory that lives until the outputs are logged."""
