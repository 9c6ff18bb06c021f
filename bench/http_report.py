"""What ``niser-mlops http`` and ``locust-import`` print about a sweep of an HTTP endpoint, and
the benchmark run they log when given an experiment."""

from __future__ import annotations

import click

from bench.load_settings import LoadSettings
from bench.sweep import SweepResult


def report(res: SweepResult, url: str, settings: LoadSettings, slo_ms: float,
           label: dict[str, str], experiment: str | None, provenance: str,
           run_name: str = "http") -> None:
    """Print the generator, a row per level and the saturation throughput; with
    ``experiment``, log the sweep as one benchmark run whose target ``http`` carries ``label``
    (``bench.locust_run.labels``) and only the endpoint's host, port and path."""
    import pandas as pd

    from bench.stats import saturation_throughput, stats_frame
    from deployers.http import HttpInvoker

    endpoint = HttpInvoker(url)  # host, port and path only: no user info, no query
    generator = label["load_generator"]
    stats = res.stats()
    click.echo(f"load generator: {generator}" + (
        f" ({label['load_generator_processes']} processes)" if generator == "locust" else ""))
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        click.echo(stats_frame(stats).to_string(index=False))
    click.echo(f"saturation throughput (p95 <= {slo_ms:g} ms): "
               f"{saturation_throughput(stats, slo_ms)}")
    if res.stopped_reason:
        click.echo(f"stopped early: {res.stopped_reason}")
    if not experiment:
        return
    from bench.report import TargetRun, log_benchmark
    from bench.tracking import use_default_tracking

    use_default_tracking()
    target = TargetRun("http", res, provenance=provenance,  # type: ignore[arg-type]
                       settings=settings,
                       params={"url": f"http://{endpoint.host}:{endpoint.port}{endpoint.path}",
                               **label},
                       notes={"load_generator": generator})
    run = log_benchmark([target], slo_ms, experiment_name=experiment, run_name=run_name,
                        hooks=[], tags={"benchmark.load_generator": generator})
    click.echo(f"MLflow run {run.parent_run_id} (experiment {experiment!r})", err=True)
