"""``niser-mlops paper``: the seed paper's figures and claims, measured and predicted here.

Deploys the registered model to the targets the figures need (``PAPER_TARGETS``: the local
server at 1 CPU, 2 CPUs and 2 instances x 1 CPU; the SageMaker stand-in at ml.c5.large; the
Lambda stand-in at 1,024 MB), sweeps each closed loop at ``LEVELS`` users and tears it down,
then logs one benchmark (experiment ``paper``) with the paper's figures and claim table
(``bench.paper``), the predicted curves and the validated errors of the latest
``predict-check`` (``bench.report_predict``), the recommendation and the cost plots. Prints the
claim table. Exits 1 when a target could not be measured.
"""

from __future__ import annotations

import sys
import time

import click

from bench.cli_options import POSITIVE, model_and_dataset
from bench.load_settings import LoadSettings
from bench.targets import TargetSpec
from bench.tracking import use_default_tracking

PAPER_TARGETS: tuple[TargetSpec, ...] = (
    TargetSpec(name="onprem-1cpu", deployer="local",
               settings={"cpus": 1.0, "workers": 1, "torch_threads": 1, "instances": 1}),
    TargetSpec(name="onprem-2cpu", deployer="local",
               settings={"cpus": 2.0, "workers": 2, "torch_threads": 1, "instances": 1}),
    TargetSpec(name="onprem-2x1cpu", deployer="local",
               settings={"cpus": 1.0, "workers": 1, "torch_threads": 1, "instances": 2}),
    TargetSpec(name="sagemaker-c5-large", deployer="sagemaker",
               settings={"instance_type": "ml.c5.large", "instance_count": 1}),
    TargetSpec(name="lambda-1024mb", deployer="lambda", settings={"memory_mb": 1024}),
)
LEVELS = [1, 2, 4, 8, 11, 16]
LOAD = LoadSettings(warmup_s=1.0, duration_s=5.0, timeout_s=10.0)


@click.command(name="paper")
@model_and_dataset
@click.option("--slo-ms", type=POSITIVE, default=50.0,
              show_default=True, help="p95 objective (saturation, recommendation, break-even).")
@click.option("--rate", type=POSITIVE, default=20.0,
              show_default=True, help="The workload's request rate for the recommendation.")
@click.option("--experiment", default="paper", show_default=True)
def paper(model_uri: str, dataset: str, slo_ms: float, rate: float, experiment: str) -> None:
    """Measure the paper's platforms here, predict what this machine cannot hold, check the
    paper's claims."""
    from mlflow import MlflowClient

    from bench.paper import claims_text, paper_hook
    from bench.payloads import Payloads
    from bench.recommend import Workload
    from bench.report import default_hooks, log_benchmark
    from bench.report_predict import forecast_hook, latest_validation
    from bench.report_recommend import recommend_hook
    from bench.targets import benchmark_target
    from niser.raw import load_dataset

    use_default_tracking()
    started = time.monotonic()
    data = load_dataset(dataset)
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
    runs = []
    for spec in PAPER_TARGETS:
        click.echo(f"{spec.name}: deploying and sweeping {','.join(map(str, LEVELS))} users",
                   err=True)
        outcome = benchmark_target(spec, model_uri, payloads, LEVELS, LOAD)
        if outcome.run is None:
            click.echo(f"error: {spec.name}: {outcome.error}", err=True)
            sys.exit(1)
        runs.append(outcome.run)
    validation = latest_validation(MlflowClient())
    workload = Workload(base_rps=rate, p95_slo_ms=slo_ms)
    figures = paper_hook(validation)
    out = log_benchmark(runs, slo_ms, experiment_name=experiment, run_name="paper",
                        hooks=[figures, forecast_hook(validation),
                               recommend_hook(workload, validation=validation),
                               *default_hooks(rate, validation)],
                        tags={"paper.model_uri": model_uri})
    click.echo(f"MLflow run {out.parent_run_id} (experiment {experiment!r}); "
               f"{time.monotonic() - started:.0f} s", err=True)
    click.echo(claims_text(figures.claims))
