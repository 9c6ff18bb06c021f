"""The terminal summary of train-and-benchmark says where each target's figures come from."""

from flows.train_and_benchmark import format_summary


def test_every_target_row_of_the_summary_carries_its_provenance():
    summary = {"model_version": "3", "alias": "champion", "mlflow_run_id": "r1",
               "metrics": {"recall_20": 51.0, "mrr_20": 18.0}, "recommendation": None,
               "targets": [{"target": "lambda-3008mb", "status": "ok",
                            "provenance": "measured-local", "p50_ms@1": 2.9}]}
    header, row = format_summary(summary).splitlines()[1:3]
    assert "provenance" in header.split()
    assert "measured-local" in row.split() and "lambda-3008mb" in row.split()
