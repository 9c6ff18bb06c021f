"""Serve both flows as deployments named ``local`` against the Prefect server in PREFECT_API_URL.

    python -m flows.serve        # then: prefect deployment run 'train-and-benchmark/local'

Each flow run starts in its own subprocess. Stop with Ctrl-C (or ``scripts/services.py stop``).
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.hpo import hpo
from flows.train_and_benchmark import train_and_benchmark


def main() -> None:
    deployments = [
        train_and_benchmark.to_deployment(
            name="local", description="Train NISER, register it, benchmark every target."),
        hpo.to_deployment(name="local", description="Optuna study, one nested run per trial."),
    ]
    serve(*[d for d in deployments if isinstance(d, RunnerDeployment)])


if __name__ == "__main__":
    main()
