"""A tiny train-and-benchmark on the servers named by the environment, for the browser test.

Run as ``python -m tests.flows.browser_run`` with ``MLFLOW_TRACKING_URI`` and
``PREFECT_API_URL`` set; prints the flow's summary as JSON on its last line. The two in-process
targets are priced as a local machine at $0.05/h, so the run has a recommendation to show.
"""

from __future__ import annotations

import json

from bench import prices

TARGETS = [{"name": "inproc-a", "deployer": "inprocess"},
           {"name": "inproc-b", "deployer": "inprocess"}]
LOCAL_PRICE_PER_HOUR = 0.05


def main() -> None:
    packaged = prices.load
    prices.load = lambda path=None: packaged(path).with_local(  # type: ignore[assignment]
        per_machine_hour=LOCAL_PRICE_PER_HOUR, source="browser test")
    from flows.train_and_benchmark import train_and_benchmark

    summary = train_and_benchmark(
        dataset="synthetic:n_items=80,n_sessions=400", epochs=1, hyperparameters={"dim": 16},
        targets=TARGETS, levels=[1, 2], level_seconds=0.3, warmup_seconds=0.05,
        experiment="browser-test")
    print(json.dumps({"links": summary["links"], "recommendation": summary["recommendation"],
                      "targets": [t["name"] for t in TARGETS],
                      "mlflow_run_id": summary["mlflow_run_id"],
                      "benchmark_run_id": summary["benchmark_run_id"],
                      "model_version": summary["model_version"], "alias": summary["alias"]}))


if __name__ == "__main__":
    main()
