"""A benchmark reads at a glance in MLflow: the description answers the question, figures are
rounded to what was measured, and every plot uses the same colour for a target."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote

import matplotlib.pyplot as plt
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.clock import FakeClock
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.plot_style import SLO_COLOR, target_colors
from bench.provenance import PROVENANCES
from bench.recommend import Workload
from bench.report import TargetRun, log_benchmark, plot_latency, plot_throughput, summarize_target
from bench.report_cost import cost_hook
from bench.report_predict import PREDICTED_ONLY
from bench.report_recommend import recommend_hook
from bench.sweep import sweep
from deployers.base import CostDrivers, Description
from tests.bench.support import answers_after

LEVELS = [1, 2, 4, 8]
NUMBER = re.compile(r"(?<![\w.%-])\d[\d,]*(?:\.\d+)?")


def _run(name: str, delay_s: float, cost: CostDrivers, clock: FakeClock, **kw) -> TargetRun:
    settings = LoadSettings(warmup_s=0.02, duration_s=0.3, timeout_s=1.0)
    result = sweep(answers_after(clock, delay_s), Payloads([[i] for i in range(1, 99)]), LEVELS,
                   settings, clock=clock)
    return TargetRun(name, result, Description(cost.kind, name, "up", cost), settings=settings,
                     **kw)


@pytest.fixture(scope="module")
def targets() -> list[TargetRun]:
    clock = FakeClock()
    return [
        _run("local-1x2", 0.01, CostDrivers(kind="local", cpus=2), clock),
        _run("sagemaker-c5-large", 0.02, CostDrivers("instance", "ml.c5.large", 1), clock,
             shaping="cgroup-v1", cold_start_s=4.123456),
        _run("lambda-1024mb", 0.012, CostDrivers("lambda", memory_mb=1024,
                                                 architecture="x86_64"), clock,
             shaping="cgroup-v1", metrics={"lambda_init_ms_mean": 812.345678}),
    ]


@pytest.fixture(scope="module")
def logged(targets, tmp_path_factory):
    root = tmp_path_factory.mktemp("readable")
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    client = MlflowClient()
    client.create_experiment("readable", artifact_location=(root / "a").as_uri())
    workload = Workload(base_rps=20, p95_slo_ms=50)
    run = log_benchmark(targets, slo_ms=50, experiment_name="readable",
                        hooks=[recommend_hook(workload), cost_hook(workload_rps=20)])
    yield run, client, root
    mlflow.set_tracking_uri(old)


def test_description_opens_with_the_recommendation_its_cost_and_provenance(logged):
    run, client, _ = logged
    note = client.get_run(run.parent_run_id).data.tags["mlflow.note.content"]
    first = note.splitlines()[0]
    assert first.startswith("### Recommended: lambda-1024mb, $0.0288/h")
    assert "`measured-local`" in first
    assert run.parent_tags["recommendation"].startswith("lambda-1024mb: $0.0288/h")


def test_description_links_the_latency_chart_of_every_target(logged):
    run, client, _ = logged
    note = client.get_run(run.parent_run_id).data.tags["mlflow.note.content"]
    links = dict(re.findall(r"\[([^]]+)\]\((#/metric\?[^)]+)\)", note))
    query = parse_qs(links["latency p50 and p95 of all targets"].split("?", 1)[1])
    assert set(json.loads(unquote(query["runs"][0]))) == set(run.child_run_ids.values())
    assert json.loads(query["plot_metric_keys"][0]) == ["latency_p50_ms", "latency_p95_ms"]
    assert query["workflowType"] == ["machine_learning"]
    # the link sits right under the headline: visible before MLflow's "Show more"
    assert note.index("latency p50 and p95") < note.index("Every option")


def test_description_ranks_options_by_target_name_with_shaping_and_glossary(logged):
    run, client, _ = logged
    note = client.get_run(run.parent_run_id).data.tags["mlflow.note.content"]
    rows = [line for line in note.splitlines() if line.startswith("| 1 |")]
    assert rows and rows[0].split(" | ")[1] == "lambda-1024mb"
    assert "| 1× sagemaker-c5-large |" in note and "cgroup-v1" in rows[0]
    for label in PROVENANCES:
        assert sum(line.startswith(f"- `{label}`:") for line in note.splitlines()) == 1
    assert "Why sagemaker-c5-large is cheapest per request but not the cheapest" in note


def test_rejected_candidates_keep_their_target_names(logged, tmp_path):
    run, client, _ = logged
    path = client.download_artifacts(run.parent_run_id, "recommendation_rejected.json",
                                     str(tmp_path))
    table = json.loads(Path(path).read_text())
    # the shapes predicted from the SageMaker target are left out: no predict-check here
    assert [row[0] for row in table["data"]] == [
        *(name for name, _, count in PREDICTED_ONLY if count == 1), "local-1x2"]


def _significant(number: str) -> int:
    digits = number.replace(",", "")
    whole, _, frac = digits.partition(".")
    both = (whole + frac).lstrip("0")
    return len(both if frac else both.rstrip("0")) or 1


def test_no_logged_metric_or_tag_of_a_benchmark_carries_more_than_six_significant_digits(logged):
    run, client, _ = logged
    too_long = []
    for rid in [run.parent_run_id, *run.child_run_ids.values()]:
        data = client.get_run(rid).data
        for key in data.metrics:
            for m in client.get_metric_history(rid, key):
                if _significant(repr(m.value)) > 6:
                    too_long.append((key, m.step, m.value))
        for key, text in data.tags.items():
            if (key.startswith("mlflow.") and key != "mlflow.note.content") or key.endswith("_id"):
                continue  # run and flow ids
            text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets carry run ids
            too_long += [(key, n) for n in NUMBER.findall(text) if _significant(n) > 6]
    assert too_long == []


def _colors(fig) -> dict[str, str]:
    ax = fig.axes[0]
    return {line.get_label().split(" ")[0]: line.get_color() for line in ax.get_lines()}


def test_one_colour_per_target_in_every_plot_with_the_legend_outside_the_data(targets, tmp_path):
    summaries = [summarize_target(t, 50) for t in targets]
    want = target_colors([t.name for t in targets])
    hook_out = cost_hook(workload_rps=20)(summaries, 50, tmp_path)
    cost = hook_out.figures["plots/cost_per_1m_vs_concurrency.png"]
    latency, throughput = plot_latency(summaries, 50), plot_throughput(summaries)
    for fig in (latency, throughput, cost):
        got = _colors(fig)
        assert {k: v for k, v in got.items() if k in want} == {
            k: v for k, v in want.items() if k in got}
        fig.canvas.draw()
        ax = fig.axes[0]
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
        assert ax.get_yscale() == "linear"
    slo = [ln for ln in latency.axes[0].get_lines() if ln.get_label() == "p95 SLO 50 ms"]
    assert slo and slo[0].get_color() == SLO_COLOR
    labels = [ln.get_label() for ln in latency.axes[0].get_lines()]
    assert all("(measured-local)" in lb for lb in labels if lb.startswith(tuple(want)))
    assert any("Why sagemaker-c5-large" in t.get_text() for t in cost.texts)
    for fig in (latency, throughput, cost):
        plt.close(fig)
