"""The terminal summary of train-and-benchmark reads in ten seconds: the model, a line per
target with where its figures come from, the recommendation with its cost, the deep links."""

from flows.train_and_benchmark import format_summary

SUMMARY = {
    "model_version": "3", "alias": "champion", "mlflow_run_id": "r1",
    "metrics": {"recall_20": 51.04, "mrr_20": 18.02}, "slo_ms": 50.0, "workload_rps": 20.0,
    "recommendation": "lambda-1024mb: $0.0288/h, $0.4 per 1M (measured-local) at 20 req/s mean",
    "links": {"mlflow": "http://127.0.0.1:5000/#/experiments/1/runs/b1?workflowType=machine_learning",
              "prefect": "http://127.0.0.1:4200/runs/flow-run/f1"},
    "targets": [
        {"target": "lambda-1024mb", "status": "ok", "provenance": "measured-local",
         "shaping": "cgroup-v1", "p50_ms_at_1": 2.93, "p95_ms_at_slo_level": 41.2,
         "slo_level": 8, "saturation_rps": 190.3, "cost_per_1m_usd_at_saturation": 0.4,
         "cost_per_1m_usd_at_workload": 0.4},
        {"target": "local-1x2", "status": "ok", "provenance": "measured-local",
         "shaping": "none", "p50_ms_at_1": 3.1, "p95_ms_at_slo_level": None, "slo_level": None,
         "saturation_rps": None, "errors": 3, "note": "levels 16 not measured"},
        {"target": "sagemaker-c5-large", "status": "FAILED: DeploymentFailed: no image"},
    ],
}


def test_summary_names_model_version_alias_and_accuracy():
    first = format_summary(SUMMARY).splitlines()[0]
    assert first == "niser v3 (champion): Recall@20 51.0 %, MRR@20 18.0 %"


def test_every_target_line_carries_its_figures_and_provenance():
    lines = format_summary(SUMMARY).splitlines()
    lam = next(line for line in lines if line.startswith("lambda-1024mb"))
    for part in ("2.93 ms", "41.2 ms @ 8", "190 req/s", "$0.4", "measured-local (cgroup-v1)"):
        assert part in lam, part
    local = next(line for line in lines if line.startswith("local-1x2"))
    assert "none <= 50 ms" in local and local.endswith("measured-local")
    assert any(line.startswith("sagemaker-c5-large") and "FAILED" in line for line in lines)
    assert "  local-1x2: levels 16 not measured" in lines
    assert "  local-1x2: 3 requests failed or timed out" in lines


def test_summary_ends_with_the_recommendation_and_the_two_deep_links():
    lines = format_summary(SUMMARY).splitlines()
    assert lines[-3] == f"Recommended: {SUMMARY['recommendation']}"
    assert lines[-2].startswith("MLflow:  http://") and "workflowType=machine_learning" in lines[-2]
    assert lines[-1] == "Prefect: http://127.0.0.1:4200/runs/flow-run/f1"


def test_summary_stays_short():
    lines = format_summary(SUMMARY).splitlines()
    notes = [line for line in lines if line.startswith("  ")]
    # model, header, a line per target, its notes, recommendation, two links
    assert len(lines) == 2 + len(SUMMARY["targets"]) + len(notes) + 3 and len(notes) == 2
    assert max(len(line) for line in lines if line not in notes) <= 120


def test_predicted_options_and_the_paper_claims_get_a_line_each_when_there():
    summary = {**SUMMARY, "predicted": "1× predicted-c5-xlarge $0.204/h ± 0 % (validated error "
               "on this machine: mean latency 17 %, p95 20 %, throughput 12 %)",
               "paper_claims": "4 of 6 judged agree"}
    lines = format_summary(summary).splitlines()
    assert f"Predicted, not measured: {summary['predicted']}" in lines
    assert "Seed paper's claims: 4 of 6 judged agree (paper/ in the MLflow run)" in lines
    assert lines[-3].startswith("Recommended: ")
