"""The seed paper's figures and claims (Chahal et al., ICPE'21), from a benchmark's targets.

``paper_hook(validation)`` is a ``bench.hooks.BenchmarkHook``: it draws every figure whose
inputs the benchmark has and tabulates every claim it can judge, so it runs in any benchmark
(``niser-mlops paper`` measures the targets all of them need). Measured curves are solid and
labelled with their provenance (``measured-local`` here), predicted ones dashed and labelled
``predicted`` (``bench.report_predict.predicted_targets``; Lambda flat beyond the environments
this machine holds: each request has its own).

Figures (``paper/``): ``fig5_on_premise.png`` (the local targets: mean response time against
concurrent users), ``fig6_sagemaker.png`` (the SageMaker target measured; ml.c5.xlarge,
ml.c5.2xlarge and 2 x ml.c5.xlarge predicted), ``fig10_cost_per_inference.png`` (USD per 1M
inferences at each level's throughput, ml.c5.xlarge against ml.c5.2xlarge), ``fig12_platforms.png``
(on-premise, SageMaker, Lambda: mean response time), ``fig13_break_even.png`` (the SageMaker
target's instances against Lambda, cost against request rate: ``bench.breakeven``).

Claims (``paper_claims.json``, the run description, ``CLAIMS`` says how each is judged): each
row has the paper's claim, our figure, its provenance and ``agree`` / ``disagree`` / ``not
judged`` (an input is missing) / ``within the model's error`` (a predicted difference smaller
than the validated error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench import perfmodel as pm
from bench import prices as price_tables
from bench.breakeven import InstanceOffer, LambdaOffer, break_even, plot_break_even
from bench.cost import SECONDS_PER_HOUR, hourly_cost
from bench.hooks import HookOutput, TargetSummary
from bench.perfmodel import Level
from bench.plot_style import FIGSIZE, finish, legend_outside, target_colors
from bench.prices import PriceError, PriceTable
from bench.report_cost import offer
from bench.report_predict import (
    FORECAST_LEVELS,
    PredictedTarget,
    Validation,
    flat_curve,
    predicted_targets,
)
from bench.rounding import fmt

Curves = dict[str, tuple[Sequence[Level], str]]  # name -> (levels, provenance)


@dataclass(frozen=True)
class Claim:
    claim: str
    figure: str
    provenance: str
    verdict: str  # agree / disagree / not judged / within the model's error
    rule: str


def _kind(s: TargetSummary) -> str:
    return s.description.target if s.description is not None else ""


def _at(levels: Sequence[Level], users: int) -> Level | None:
    return next((lv for lv in levels if lv.users == users), None)


def lambda_curve(levels: Sequence[Level]) -> list[Level]:
    """Measured levels, then the 1-user figures at the levels beyond them (flat: each request
    its own environment, up to the concurrency limit)."""
    top = max(lv.users for lv in levels)
    return [*levels, *flat_curve(levels, [n for n in FORECAST_LEVELS if n > top])]


def _plot(curves: Curves, predicted: Curves, title: str, ylabel: str,
          value: Callable[[Level], float], caption: str) -> plt.Figure:
    colors = target_colors([*curves, *predicted])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for style, group in (("o-", curves), ("x--", predicted)):
        for name, (levels, prov) in group.items():
            ax.plot([lv.users for lv in levels], [value(lv) for lv in levels], style,
                    color=colors[name], label=f"{name} ({prov})")
    ax.set(xlabel="concurrent users", ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return finish(fig, caption)


def _per_million(levels: Sequence[Level], per_hour: float) -> list[Level]:
    """Levels whose ``mean_ms`` is replaced by the USD per 1M inferences at their throughput."""
    return [Level(lv.users, per_hour / (lv.throughput_rps * SECONDS_PER_HOUR) * 1e6,
                  lv.p50_ms, lv.p95_ms, lv.throughput_rps) for lv in levels
            if lv.throughput_rps > 0]


def _linear_r2(levels: Sequence[Level]) -> float:
    xs = np.array([lv.users for lv in levels], dtype=float)
    ys = np.array([lv.mean_ms for lv in levels])
    if len(xs) < 3:
        return math.nan
    fit = np.polyval(np.polyfit(xs, ys, 1), xs)
    total = float(((ys - ys.mean()) ** 2).sum())
    return 1 - float(((ys - fit) ** 2).sum()) / total if total > 0 else math.nan


def _verdict(ok: bool | None) -> str:
    return "not judged" if ok is None else ("agree" if ok else "disagree")


def claims(local: Mapping[str, tuple[pm.Shape, Sequence[Level]]],
           sagemaker: tuple[str, Sequence[Level], str] | None,
           lam: tuple[str, Sequence[Level], str] | None,
           predicted: Mapping[str, Sequence[Level]], per_million_ratio: float | None,
           break_even_rps: float | None, break_even_input: str,
           p95_error_pct: float | None = None) -> list[Claim]:
    """The claim table (module docstring): every rule is in its row."""
    out = []
    one = next(((n, lv) for n, (sh, lv) in local.items()
                if sh.instances == 1 and sh.cpus <= 1), None)
    r1 = _at(one[1], 1) if one else None
    r11 = _at(one[1], 11) if one else None
    ratio = r11.mean_ms / r1.mean_ms if r1 and r11 else None
    out.append(Claim("on-premise response time grows with concurrency (16 ms at 1 request, "
                     "278 ms at 11)", f"{one[0]}: {fmt(r1.mean_ms)} ms -> {fmt(r11.mean_ms)} ms "
                     f"({fmt(ratio)}x)" if one and r1 and r11 and ratio else "-",
                     "measured-local", _verdict(None if ratio is None else ratio >= 5),
                     "mean at 11 users / mean at 1 user >= 5 on one instance of <= 1 CPU"))
    two = next(((n, lv) for n, (sh, lv) in local.items() if sh.instances == 2), None)
    big = next(((n, lv) for n, (sh, lv) in local.items()
                if sh.instances == 1 and two and sh.cpus == 2 * local[two[0]][0].cpus), None)
    a = _at(two[1], 11) if two else None
    b = _at(big[1], 11) if big else None
    out.append(Claim("two half-size instances ~ half the response time of one at high "
                     "concurrency", f"{two[0]} / {big[0]} at 11 users: "
                     f"{fmt(a.mean_ms / b.mean_ms)}" if two and big and a and b else "-",
                     "measured-local", _verdict(None if not (a and b) else
                                               a.mean_ms / b.mean_ms <= 0.75),
                     "mean at 11 users, two instances / one of twice the CPUs <= 0.75"))
    if lam is not None:
        curve = lambda_curve(lam[1])
        p1, p16 = _at(curve, 1), _at(curve, 16)
        top = max(lam[1], key=lambda lv: lv.users)
        flat = p16.p50_ms / p1.p50_ms if p1 and p16 else None
        here = top.p50_ms / p1.p50_ms if p1 else None
        out.append(Claim("Lambda response time flat as concurrency grows",
                         f"{lam[0]}: p50 at 16 users / at 1 = {fmt(flat)} (predicted beyond "
                         f"the {top.users} environments this machine holds; measured here at "
                         f"{top.users} users: {fmt(here)}, on shared cores)", "predicted",
                         _verdict(None if flat is None else flat <= 1.25),
                         "p50 at 16 users / p50 at 1 user <= 1.25"))
    else:
        out.append(Claim("Lambda response time flat as concurrency grows", "-", "-",
                         "not judged", "p50 at 16 users / p50 at 1 user <= 1.25"))
    r2 = _linear_r2([lv for lv in sagemaker[1] if lv.users >= 2]) if sagemaker else math.nan
    out.append(Claim("SageMaker response time grows linearly with concurrency",
                     f"{sagemaker[0]}: R² of a line through the mean from 2 users = {fmt(r2)}"
                     if sagemaker else "-", sagemaker[2] if sagemaker else "-",
                     _verdict(None if math.isnan(r2) else r2 >= 0.95), "R² >= 0.95"))
    p2x = _at(predicted.get("predicted-2x-c5-xlarge", ()), 11)
    p1x = _at(predicted.get("predicted-c5-2xlarge", ()), 11)
    margin = 100 * (1 - p2x.p95_ms / p1x.p95_ms) if p2x and p1x else None
    err = p95_error_pct if p95_error_pct is not None else 0.0
    out.append(Claim("2 x ml.c5.xlarge beats 1 x ml.c5.2xlarge at high concurrency",
                     f"p95 at 11 users: {fmt(p2x.p95_ms)} ms vs {fmt(p1x.p95_ms)} ms "
                     f"({fmt(margin)} % lower; validated p95 error {fmt(p95_error_pct)} %)"
                     if p2x and p1x and margin is not None else "-", "predicted",
                     "not judged" if margin is None else "disagree" if margin <= 0 else
                     "agree" if margin > err else "within the model's error",
                     "p95 at 11 users, 2 x ml.c5.xlarge lower than ml.c5.2xlarge by more than "
                     "the validated p95 error"))
    out.append(Claim("cost per inference ~2x on ml.c5.2xlarge vs ml.c5.xlarge",
                     f"median ratio over 1..16 users = {fmt(per_million_ratio)}"
                     if per_million_ratio else "-", "predicted",
                     _verdict(None if per_million_ratio is None
                              else 1.5 <= per_million_ratio <= 2.5),
                     "median over the levels of USD per 1M, c5.2xlarge / c5.xlarge, in 1.5..2.5"))
    out.append(Claim("below some request rate Lambda is cheaper, above it an instance",
                     f"{break_even_input}: break-even at {fmt(break_even_rps)} req/s"
                     if break_even_rps else "-", "measured-local",
                     _verdict(None if not break_even_input else break_even_rps is not None
                              and break_even_rps > 0),
                     "a break-even rate > 0 within 4 x the instance's saturation"))
    return out


def _local_shape(s: TargetSummary) -> pm.Shape | None:
    cost = s.description.cost if s.description is not None else None
    if cost is None or _kind(s) != "local":
        return None
    details = s.description.details if s.description is not None else {}
    workers, threads = details.get("workers"), details.get("torch_threads")
    workers = workers if isinstance(workers, int) else 1
    # unshaped: the CPUs its workers' threads can use
    cpus = cost.cpus or workers * (threads if isinstance(threads, int) else 1)
    return pm.Shape(float(cpus), workers, cost.instance_count or 1)


def _instance_price(t: PredictedTarget, table: PriceTable) -> float | None:
    try:
        return hourly_cost(t.drivers, table)
    except PriceError:
        return None


class PaperHook:
    """The figures and claims this benchmark's targets allow (module docstring); after a call,
    ``claims`` holds the rows it judged."""

    def __init__(self, validation: Validation | None, table: PriceTable | None = None) -> None:
        self.validation, self.table = validation, table
        self.claims: list[Claim] = []

    def __call__(self, summaries: list[TargetSummary], slo_ms: float, workdir: Path
                 ) -> HookOutput:
        validation, table = self.validation, self.table
        tbl = table if table is not None else price_tables.load()
        out = HookOutput()
        closed = [s for s in summaries if s.mode == "closed" and pm.levels_of(s.stats)]
        levels = {s.name: list(pm.levels_of(s.stats)) for s in closed}
        local = {s.name: (sh, levels[s.name]) for s in closed
                 if (sh := _local_shape(s)) is not None}
        sm = next((s for s in closed if _kind(s) == "sagemaker"
                   and s.description and s.description.cost.instance_type), None)
        lam = next((s for s in closed if _kind(s) == "lambda"), None)
        forecasts = predicted_targets(closed, validation)
        predicted = {t.name: list(t.levels) for t in forecasts}
        if local:
            out.figures["paper/fig5_on_premise.png"] = _plot(
                {n: (lv, "measured-local") for n, (_, lv) in local.items()}, {},
                "Fig. 5: on-premise, response time vs. users", "mean response time (ms)",
                lambda lv: lv.mean_ms, "Local server on this machine, shaped by cgroups "
                "(measured-local). The paper: 8 cores, and two 4-core instances.")
        if sm is not None:
            out.figures["paper/fig6_sagemaker.png"] = _plot(
                {sm.name: (levels[sm.name], sm.provenance)},
                {n: (lv, "predicted") for n, lv in predicted.items()},
                "Figs. 6/8: SageMaker instances, response time vs. users",
                "mean response time (ms)", lambda lv: lv.mean_ms,
                f"{sm.name} measured ({sm.provenance}); the others predicted from it by the "
                "performance model, one AWS vCPU as one core of this machine, contention "
                f"{max(0.0, validation.sigma) if validation else 0.0:.2f} from the latest "
                "predict-check (taken as at least 0).")
        ratio = None
        by_name = {t.name: t for t in forecasts}
        if {"predicted-c5-xlarge", "predicted-c5-2xlarge"} <= set(by_name):
            small, large = by_name["predicted-c5-xlarge"], by_name["predicted-c5-2xlarge"]
            ps, pl = _instance_price(small, tbl), _instance_price(large, tbl)
            if ps and pl:
                cs, cl = _per_million(small.levels, ps), _per_million(large.levels, pl)
                ratio = float(np.median([b.mean_ms / a.mean_ms for a, b in zip(cs, cl,
                                                                                strict=True)]))
                out.figures["paper/fig10_cost_per_inference.png"] = _plot(
                    {}, {small.name: (cs, "predicted"), large.name: (cl, "predicted")},
                    "Fig. 10: cost per inference vs. users", "USD per 1M inferences",
                    lambda lv: lv.mean_ms, "Price per hour / requests served per hour at each "
                    "level, both predicted from the measured SageMaker target: at the same "
                    "users ml.c5.2xlarge serves little more while costing twice as much.")
        platforms: Curves = {}
        if local:
            name = max(local, key=lambda n: local[n][0].cpus * local[n][0].instances)
            platforms[name] = (local[name][1], "measured-local")
        if sm is not None:
            platforms[sm.name] = (levels[sm.name], sm.provenance)
        lam_pred: Curves = {}
        if lam is not None:
            platforms[lam.name] = (levels[lam.name], lam.provenance)
            lam_pred[lam.name] = (flat_curve(levels[lam.name], FORECAST_LEVELS), "predicted")
        if platforms:
            out.figures["paper/fig12_platforms.png"] = _plot(
                platforms, lam_pred, "Fig. 12: on-premise vs. SageMaker vs. Lambda",
                "mean response time (ms)", lambda lv: lv.mean_ms,
                "Solid: measured on this machine's stand-ins (Lambda's environments share "
                "its 2 cores with the load generator, so its latency rises with the users "
                "here); dashed: Lambda as predicted for AWS, flat (each request its own "
                "environment, its own CPU share).")
        be_rate, be_input = None, ""
        if sm is not None and lam is not None:
            try:
                inst, fn = offer(sm, tbl), offer(lam, tbl)
                if isinstance(inst, InstanceOffer) and isinstance(fn, LambdaOffer):
                    max_rate = 4 * inst.saturation_rps
                    be_rate, be_input = break_even(inst, fn, max_rate).rate_rps, (
                        f"{sm.name} vs {lam.name}")
                    png = plot_break_even(inst, fn, max_rate, workdir / "fig13_break_even.png",
                                          title="Fig. 13: break-even, instances vs. Lambda")
                    out.files.append(("paper", png))
            except PriceError as exc:
                out.note.append(f"Fig. 13 not drawn: {exc}")
        rows = claims(local, (sm.name, levels[sm.name], sm.provenance) if sm else None,
                      (lam.name, levels[lam.name], lam.provenance) if lam else None,
                      predicted, ratio, be_rate, be_input,
                      validation.metrics.get("prediction_mape_p95") if validation else None)
        frame = pd.DataFrame([vars(c) for c in rows])
        out.tables["paper_claims.json"] = frame
        agree, judged = _tally(rows)
        out.parent_metrics["paper_claims_agree"] = float(agree)
        out.parent_metrics["paper_claims_judged"] = float(judged)
        out.parent_tags["paper.claims"] = f"{agree} of {judged} judged agree"
        out.note.append(claims_markdown(rows))
        self.claims = rows
        return out


def paper_hook(validation: Validation | None, table: PriceTable | None = None) -> PaperHook:
    """``PaperHook`` as a ``bench.hooks.BenchmarkHook``."""
    return PaperHook(validation, table)


def _tally(rows: Sequence[Claim]) -> tuple[int, int]:
    """(claims that agree, claims judged)."""
    return (sum(c.verdict == "agree" for c in rows),
            sum(c.verdict != "not judged" for c in rows))


def claims_text(rows: Sequence[Claim]) -> str:
    """The claim table for a terminal, and a last line ``paper claims: A of J judged agree``."""
    lines = [f"[{c.verdict}] {c.claim}\n    {c.figure} ({c.provenance}; rule: {c.rule})"
             for c in rows]
    agree, judged = _tally(rows)
    return "\n".join([*lines, f"paper claims: {agree} of {judged} judged agree"])


def claims_markdown(rows: Sequence[Claim]) -> str:
    lines = ["**The seed paper's claims, checked** (figures in *paper/*):", "",
             "| paper's claim | our figure | provenance | verdict | rule |",
             "|---|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.figure} | `{c.provenance}` | {c.verdict} | {c.rule} |"
              for c in rows]
    return "\n".join(lines)
