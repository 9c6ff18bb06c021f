"""The benchmark's commands, as click commands that ``niser-mlops`` adds to its group.

- ``calibrate``: the honesty check (``bench.calibrate``); prints the table and exits 1 when a level
  misses the bound. ``--generator locust`` measures Locust beside ours in the same run
  (``bench.locust_calibrate``).
- ``http``: a closed-loop sweep against any pyfunc scoring endpoint (e.g. ``mlflow models serve``)
  with payloads from a dataset's test sessions, printing the per-level statistics; with
  ``--generator locust [--processes N]`` each level is a Locust run (``bench.locust_run``), with
  ``--experiment`` the sweep is logged to MLflow labelled with its generator.
- ``prices refresh|show``: rebuild the price table from the AWS Price List API, or print one
  region's prices; a price problem exits 2 with the reason.
- ``compare``: the benchmark table across target runs from MLflow.
- ``power-tune``: Lambda Power Tuning of the registered model (``bench.power_tune``): per memory
  size cold start, warm billed duration, CPU share and cost, then the cost, speed and balanced
  picks; the table is printed (picks on its last line) and logged to MLflow. Exits 1 when a size
  could not be measured.
- ``replay``: real test sessions sent click by click through a session server in front of a
  deployment, at their recorded pace or as Poisson arrivals (``bench.replay``); the summary is
  printed and logged to MLflow as target ``session-server:<deployer>``. Exits 1 on any error or
  mismatch.
- ``predict-check``: the performance model validated on this machine (``bench.predict_cli``):
  shapes measured, some fitted and the others predicted, the error printed on the last line.

``python -m bench.cli ...`` runs the same commands. A bad argument exits 2 naming the option.
Heavy imports happen inside the commands, so the command line starts fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from bench.cli_options import (
    INT_LIST,
    LEVELS,
    NON_NEGATIVE,
    POSITIVE,
    FiniteRange,
    model_and_dataset,
)
from bench.leftovers_cli import sweep
from bench.load_settings import DEFAULT_LEVELS
from bench.locust_import import locust_import, locust_mix
from bench.paper_cli import paper
from bench.predict_cli import predict_check
from bench.replay_cli import replay
from bench.tracking import use_default_tracking


def _csv(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


GENERATOR = click.Choice(["niser", "locust"])


def _processes_only_with_locust(generator: str, processes: object, default: object) -> None:
    if generator != "locust" and processes != default:
        raise click.BadParameter("only with --generator locust (our generator is one process)",
                                 param_hint="--processes")


@click.command()
@click.option("--delay-ms", type=POSITIVE, default=16.0, show_default=True, help="Stub delay.")
@click.option("--users", type=LEVELS, default=_csv([1, 2, 4, 8, 16, 24, 32]), show_default=True,
              help="Comma-separated user counts.")
@click.option("--warmup-s", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Warm-up per level.")
@click.option("--duration-s", type=POSITIVE, default=3.0, show_default=True,
              help="Window per level.")
@click.option("--generator", type=GENERATOR, default="niser", show_default=True,
              help="locust: Locust measured beside ours, level by level, in the same run.")
@click.option("--processes", type=INT_LIST, default="1", show_default=True,
              help="Locust process counts, one Locust configuration each (e.g. 1,2).")
@click.option("--bound-ms", type=POSITIVE, default=None,
              help="Bound on p50 - delay (default 1 ms for ours, 2 ms for Locust).")
def calibrate(delay_ms: float, users: list[int], warmup_s: float, duration_s: float,
              generator: str, processes: list[int], bound_ms: float | None) -> None:
    """Measure a stub server with a known delay; exit 1 when a level misses the bound."""
    _processes_only_with_locust(generator, processes, [1])
    if generator == "locust":
        from bench import locust_calibrate

        comparison = locust_calibrate.compare(delay_ms, users, processes, warmup_s, duration_s,
                                              bound_ms or locust_calibrate.BOUND_MS)
        click.echo(locust_calibrate.format_comparison(comparison))
        if not comparison.passed:
            sys.exit(1)
        return
    from bench import calibrate as calibration

    cal = (calibration.calibrate(delay_ms, users, warmup_s, duration_s) if bound_ms is None
           else calibration.calibrate(delay_ms, users, warmup_s, duration_s, bound_ms))
    click.echo(calibration.format_table(cal))
    if not cal.passed:
        sys.exit(1)


@click.command()
@click.option("--url", required=True, help="e.g. http://127.0.0.1:5000/invocations")
@click.option("--data", required=True,
              help="Preprocessed dataset folder (train_sessions.txt, test.tsv) whose test "
                   "prefixes become the payloads.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sessions per request.")
@click.option("--users", type=LEVELS, default=_csv(DEFAULT_LEVELS), show_default=True)
@click.option("--warmup-s", type=NON_NEGATIVE, default=2.0, show_default=True)
@click.option("--duration-s", type=POSITIVE, default=10.0, show_default=True)
@click.option("--timeout-s", type=POSITIVE, default=10.0, show_default=True)
@click.option("--slo-ms", type=POSITIVE, default=100.0, show_default=True)
@click.option("--generator", type=GENERATOR, default="niser", show_default=True,
              help="The load generator: ours (threads) or Locust (a subprocess per level).")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Locust processes on this machine (--processes of Locust).")
@click.option("--experiment", default=None,
              help="Also log the sweep to MLflow as one benchmark run of this experiment.")
@click.option("--provenance", type=click.Choice(["measured-local", "measured-real"]),
              default="measured-local", show_default=True,
              help="With --experiment: whether the endpoint is a real AWS one.")
def http(url: str, data: str, batch_size: int, users: list[int], warmup_s: float,
         duration_s: float, timeout_s: float, slo_ms: float, generator: str, processes: int,
         experiment: str | None, provenance: str) -> None:
    """Closed-loop sweep against a scoring endpoint."""
    _processes_only_with_locust(generator, processes, 1)
    from bench.load_settings import LoadSettings
    from bench.locust_run import labels, locust_sweep
    from bench.payloads import Payloads
    from bench.sweep import sweep
    from deployers.http import HttpInvoker
    from niser.data import load_preprocessed

    dataset = load_preprocessed(data)
    payloads = Payloads.from_samples(dataset.test, dataset.vocab, batch_size=batch_size)
    settings = LoadSettings(warmup_s=warmup_s, duration_s=duration_s, timeout_s=timeout_s)
    if generator == "locust":
        res = locust_sweep(url, payloads.batches, users, settings, processes)
    else:
        res = sweep(HttpInvoker(url, timeout_s=timeout_s), payloads, users, settings)
    from bench.http_report import report

    report(res, url, settings, slo_ms, labels(generator, processes), experiment, provenance)


@click.command()
@click.option("--parent-run-id", help="The benchmark's parent run.")
@click.option("--experiment", help="Every target run of this experiment.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
def compare(parent_run_id: str | None, experiment: str | None, tracking_uri: str | None) -> None:
    """Table of benchmark runs from MLflow (give --parent-run-id or --experiment)."""
    if (parent_run_id is None) == (experiment is None):
        raise click.UsageError("give exactly one of --parent-run-id or --experiment")
    import mlflow
    import pandas as pd

    from bench.report import compare_table

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    table = compare_table(parent_run_id, experiment)
    if table.empty:
        click.echo("no benchmark target runs found", err=True)
        sys.exit(1)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        click.echo(table.to_string(index=False))


@click.group()
def prices() -> None:
    """Inspect or refresh the price table."""


@prices.command()
@click.option("--region", help="AWS region code to price (default: the table's default region).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Where to write the new table (default: overwrite bench/prices.json).")
@click.option("--base", type=click.Path(path_type=Path),
              help="Table to start from (default: bench/prices.json).")
def refresh(region: str | None, out: Path | None, base: Path | None) -> None:
    """Rebuild prices from the AWS Price List API."""
    from bench import price_list
    from bench import prices as tables

    try:
        table, report = price_list.refresh(tables.load(base), region=region)
        written = tables.save(table, out or tables.DEFAULT_PATH)
    except tables.PriceError as exc:
        _price_error(exc)
    click.echo(f"wrote {written}")
    for line in report:
        click.echo(f"  {line}")


@prices.command()
@click.option("--region", help="AWS region code.")
@click.option("--table", type=click.Path(path_type=Path), help="Price table to read.")
def show(region: str | None, table: Path | None) -> None:
    """Print the prices of one region."""
    from bench import prices as tables

    try:
        loaded = tables.load(table)
        name = region or loaded.default_region
        data = loaded.region(name).model_dump(mode="json", by_alias=True)
    except tables.PriceError as exc:
        _price_error(exc)
    click.echo(json.dumps({name: data, "local": loaded.local.model_dump(mode="json")}, indent=2))


def _price_error(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _lambda_memory(ctx: click.Context, param: click.Parameter, sizes: list[int]) -> list[int]:
    from bench.cost import LAMBDA_MEMORY_MB

    lo, hi = LAMBDA_MEMORY_MB
    for size in sizes:
        if not lo <= size <= hi:
            raise click.BadParameter(f"{size} MB is outside Lambda's {lo}..{hi} MB; give sizes "
                                     "such as 512,1024,1769")
    if len(set(sizes)) != len(sizes):
        raise click.BadParameter(f"{_csv(sizes)} repeats a size; give each size once")
    return sizes


@click.command(name="power-tune")
@model_and_dataset
@click.option("--memory", type=INT_LIST, callback=_lambda_memory, default="512,1024,1769,3008",
              show_default=True, help="Memory sizes in MB, comma-separated (128..10240).")
@click.option("--architecture", type=click.Choice(["x86_64", "arm64"]), default="x86_64",
              show_default=True)
@click.option("--invocations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Warm invocations of the payload mix per size.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Unmeasured invocations before the mix.")
@click.option("--cold-starts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Cold starts per size, each the first call of a fresh deployment.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=200, show_default=True,
              help="Sessions per invocation (enough CPU work to show the CPU share).")
@click.option("--probe-seconds", type=POSITIVE, default=2.0, show_default=True,
              help="Length of the CPU-share probe (when the deployment reports usage).")
@click.option("--balanced-weight", type=FiniteRange(0, 1), default=0.5, show_default=True,
              help="Power Tuning's balancedWeight: 0 picks for speed, 1 for cost.")
@click.option("--k", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the mix.")
@click.option("--experiment", default="power-tune", show_default=True)
def power_tune(model_uri: str, dataset: str, memory: list[int], architecture: str,
               invocations: int, warmup: int, cold_starts: int, batch: int,
               probe_seconds: float, balanced_weight: float, k: int, seed: int,
               experiment: str) -> None:
    """Lambda Power Tuning of the registered model: cost, speed and balanced memory sizes."""
    from bench import power_tune as tuning
    from bench import prices as tables
    from bench.power_tune_measure import TuneSettings
    from bench.power_tune_measure import power_tune as measure
    from bench.power_tune_mix import MIX_CLASSES, PayloadMix, class_counts
    from bench.power_tune_report import log_power_tune
    from deployers import aws
    from deployers.registry import get_deployer
    from niser.raw import load_dataset

    try:
        class_counts([c.weight for c in MIX_CLASSES], invocations)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--invocations") from None
    try:
        prices = tables.load().region(aws.region()).lambda_
    except tables.PriceError as exc:
        _price_error(exc)
    use_default_tracking()
    settings = TuneSettings(memory_mb=memory, architecture=architecture,  # type: ignore[arg-type]
                            invocations=invocations, warmup=warmup, cold_starts=cold_starts,
                            batch=batch, probe_s=probe_seconds, k=k, seed=seed,
                            balanced_weight=balanced_weight)
    data = load_dataset(dataset)
    mix = PayloadMix.from_samples(data.test, data.vocab, settings.batch, settings.invocations,
                                  settings.seed)
    outcomes = measure(get_deployer("lambda"), model_uri, mix, settings,
                       progress=lambda line: click.echo(line, err=True))
    header = "\n".join([
        f"Lambda power tuning of {model_uri} ({architecture}, {aws.region()} prices)",
        f"per size: {cold_starts} cold start(s), each a fresh deployment; {warmup} warm-up + "
        f"{invocations} warm invocations of {batch} sessions",
        f"mix: {mix.describe()}",
        "billed ms of the warm invocations; cost per 1M = requests + duration, without INIT "
        "(one cold start priced on its own)"])
    summary = tuning.summarize(outcomes, prices, balanced_weight, header)
    run = log_power_tune(summary.measured, summary.failed, summary.picks,
                         {"model_uri": model_uri, "dataset": dataset, "mix": mix.describe(),
                          **{key: str(v) for key, v in settings.model_dump().items()}},
                         summary.table, experiment_name=experiment)
    fallback = sum(m.fallback_sessions for _, m in summary.measured)
    sent = sum(m.sessions for _, m in summary.measured)
    if sent and fallback > sent / 2:
        click.echo(f"warning: {fallback} of {sent} sessions got the popularity fallback (their "
                   "items are unknown to the model): pass the --dataset it was trained on",
                   err=True)
    click.echo(f"MLflow run {run.parent_run_id} (experiment {experiment!r})", err=True)
    click.echo(summary.table)
    if summary.failed:
        sys.exit(1)


@click.command(name="serve-stub", hidden=True)
@click.option("--delay-ms", type=POSITIVE, default=16.0)
def serve_stub(delay_ms: float) -> None:
    """Run the calibration stub server until SIGTERM (started by ``StubServer``)."""
    from bench.stub_server import serve

    serve(delay_ms)


COMMANDS: list[click.Command] = [calibrate, http, locust_import, locust_mix, paper, prices, power_tune,
                                 predict_check, replay, serve_stub, sweep]
"""What ``niser-mlops`` adds to its group (it has its own ``compare``)."""


@click.group(name="python -m bench.cli")
def bench() -> None:
    """Benchmark commands (also under ``niser-mlops``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for _command in [*COMMANDS, compare]:
    bench.add_command(_command)


if __name__ == "__main__":
    bench()
