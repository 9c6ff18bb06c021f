"""``niser-mlops predict-check``: validate the performance model on this machine.

Measures the shapes of ``bench.predict_measure.PLAN`` with the registered model, fits the model
on some and predicts the others (``bench.predict_check``), prints measured against predicted per
level and, last, ``prediction error: mean latency X %, p95 Y %, saturation throughput Z %,
cheapest choice agreement W %``; logs it all to MLflow (experiment ``predict-check``: one child
run per measured shape, predicted step metrics on the held-out ones, the errors on the parent).
Exits 1 when a shape could not be measured.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from bench.cli_options import POSITIVE, model_and_dataset
from bench.tracking import use_default_tracking


@click.command(name="predict-check")
@click.option("--quick", is_flag=True,
              help="Fewer levels (1,2,4,8,16) and 3 s windows: about 6 minutes here.")
@model_and_dataset
@click.option("--slo-ms", type=POSITIVE, default=50.0,
              show_default=True, help="p95 objective of the logged benchmark's tables.")
@click.option("--experiment", default="predict-check", show_default=True)
@click.option("--measurements", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Re-run the check on a measurement file (the `prediction/measured.json` "
                   "artifact of an earlier check) instead of measuring; nothing is logged.")
def predict_check(quick: bool, model_uri: str, dataset: str, slo_ms: float,
                  experiment: str, measurements: Path | None) -> None:
    """Measure shapes, fit the performance model on some, predict the others, print the error."""
    from bench import predict_check as pc
    from bench import prices as tables
    from bench.payloads import Payloads
    from bench.predict_measure import measure
    from bench.report import log_benchmark
    from bench.report_predict import check_hook
    from deployers import aws
    from deployers.sagemaker.instances import instance_shape
    from niser.raw import load_dataset

    try:
        table = tables.load()
        region = table.region(aws.region())
        vcpu_hour = table.instance_hourly("ml.c5.large", aws.region()).usd / instance_shape(
            "ml.c5.large").vcpus
    except tables.PriceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if measurements is not None:
        try:
            shapes = pc.loads(measurements.read_text())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--measurements") from None
        result = pc.check(shapes, vcpu_hour, region.lambda_)
    else:
        use_default_tracking()
        started = time.monotonic()
        data = load_dataset(dataset)
        payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
        try:
            shapes, runs = measure(model_uri, payloads, quick,
                                   progress=lambda line: click.echo(line, err=True))
        except RuntimeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        result = pc.check(shapes, vcpu_hour, region.lambda_)
        bench = log_benchmark(runs, slo_ms, experiment_name=experiment,
                              run_name="predict-check",
                              hooks=[check_hook(result, pc.dumps(shapes))],
                              tags={"predict_check.quick": str(quick),
                                    "predict_check.model_uri": model_uri})
        click.echo(f"MLflow run {bench.parent_run_id} (experiment {experiment!r}); "
                   f"{time.monotonic() - started:.0f} s", err=True)
    click.echo(pc.table(result))
    click.echo(result.summary_line())
