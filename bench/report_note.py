"""The benchmark run's description (MLflow tag ``mlflow.note.content``, markdown).

What a reader sees first on the run's page, in this order:

1. the hooks' headlines (the recommendation, its cost and provenance);
2. links to MLflow's metric chart of every target's ``latency_p50_ms`` and ``latency_p95_ms``
   (and p95 alone, throughput, cost per 1M when logged) against concurrency, as relative links
   (``bench.links``) that work on whatever host serves the UI;
3. the hooks' notes (the ranked options, why the cheapest per request is not the cheapest);
4. one row per target: p50 at the first level, p95 at its SLO level, saturation throughput,
   cost per 1M at saturation, cold start, provenance and (where any target is shaped) shaping;
5. the provenance labels, one line each (``bench.provenance.MEANING``).

Every number is written with 2-4 significant digits (``bench.rounding.fmt``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.hooks import HookOutput, TargetSummary
from bench.links import metric_chart_url
from bench.provenance import MEANING
from bench.rounding import fmt

LATENCY = ("latency_p50_ms", "latency_p95_ms")


def chart_links(experiment_id: str, run_ids: Sequence[str], cost: bool) -> str:
    """One markdown line of chart links over ``run_ids`` (relative to the MLflow UI)."""

    def link(text: str, metrics: Sequence[str]) -> str:
        return f"[{text}]({metric_chart_url('', experiment_id, run_ids, metrics)})"

    links = [link("latency p50 and p95 of all targets", LATENCY),
             link("p95 only", ["latency_p95_ms"]), link("throughput", ["throughput_rps"])]
    if cost:
        links.append(link("cost per 1M", ["cost_per_1m_usd"]))
    return ("**Charts against concurrent users** (MLflow calls the axis *Step*): "
            + " · ".join(links))


def slo_level(s: TargetSummary) -> tuple[float, float] | None:
    """``(level, p95)`` where the target reached its saturation throughput under the SLO."""
    if not s.saturation_rps:
        return None
    at = max((st for st in s.stats if st.throughput_rps == s.saturation_rps),
             key=lambda st: st.level)
    return at.level, at.p95_ms


def targets_table(summaries: Sequence[TargetSummary],
                  metrics: Mapping[str, Mapping[str, float]], slo_ms: float) -> str:
    """One markdown row per measured target."""
    shaped = any(s.shaping not in ("", "none") for s in summaries)
    unit = "users" if summaries and summaries[0].mode == "closed" else "req/s"
    head = ["target", "p50 at the first level (ms)", f"p95 at its SLO level (ms @ {unit})",
            "saturation (req/s)", "$ per 1M at saturation", "cold start (s)", "provenance"]
    head += ["shaping"] if shaped else []
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(
        ["---"] + ["---:"] * 5 + ["---"] + (["---"] if shaped else [])) + "|"]
    for s in summaries:
        first = s.stats[0] if s.stats else None
        at = slo_level(s)
        cells = [s.name, fmt(first.p50_ms) if first else "-",
                 f"{fmt(at[1])} @ {fmt(at[0])}" if at else f"none ≤ {fmt(slo_ms)}",
                 fmt(s.saturation_rps), fmt(metrics.get(s.name, {}).get(
                     "cost_per_1m_usd_at_saturation")), fmt(s.cold_start_s), f"`{s.provenance}`"]
        cells += [s.shaping] if shaped else []
        rows.append("| " + " | ".join(cells) + " |")
    return "**Measured per target:**\n\n" + "\n".join(rows)


def glossary() -> str:
    """The provenance labels, one line each."""
    return "**Where each figure comes from:**\n\n" + "\n".join(
        f"- `{label}`: {meaning}." for label, meaning in MEANING.items())


def compose(summaries: Sequence[TargetSummary], slo_ms: float, outputs: Sequence[HookOutput],
            experiment_id: str, child_run_ids: Mapping[str, str],
            metrics: Mapping[str, Mapping[str, float]]) -> str:
    """The whole description, in the order of the module docstring."""
    runs = [child_run_ids[s.name] for s in summaries if s.name in child_run_ids]
    cost = any("cost_per_1m_usd" in o.step_metrics.get(s.name, {})
               for o in outputs for s in summaries)
    parts = [o.headline for o in outputs if o.headline]
    if not parts:
        parts.append(f"### Benchmark of {', '.join(s.name for s in summaries)}")
    if runs:
        parts.append(chart_links(experiment_id, runs, cost))
    parts += [n for o in outputs for n in o.note]
    parts += [targets_table(summaries, metrics, slo_ms), glossary(),
              "Plots (latency, throughput, cost, break-even) are under *Artifacts* → `plots/`."]
    return "\n\n".join(parts) + "\n"
