"""Locust runs of several machines: ``niser-mlops locust-mix`` writes the mix file the workers
send, ``niser-mlops locust-import`` imports their records as one sweep.

Locust's distributed mode (a master and workers on other machines, README "Load from Locust")
leaves each worker's per-request records in that worker's own folder. Copied to one machine, the
folders of one Locust run are one level: ``--level USERS=DIR[,DIR...]``, once per level. Their
requests are merged by ``bench.locust_run.to_level`` into the same per-level figures and MLflow
metrics as every other sweep (p50/p95/p99 at step = users), labelled ``load_generator=locust``.

Records of several machines must be stamped with the wall clock (``NISER_LOCUST_CLOCK=wall`` on
every worker): each latency is still one machine's own difference, the wall clock only places
the machines' requests in one window, to within their clock skew. The generator's CPU share is
not measured then (the other machines' cores are not known here).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.cli_options import NON_NEGATIVE, POSITIVE

if TYPE_CHECKING:  # pandas and the sweep load inside the command: the CLI starts fast
    from bench.load_settings import LoadSettings
    from bench.sweep import SweepResult



def parse_level(text: str) -> tuple[int, list[Path]]:
    """``USERS=DIR[,DIR...]`` as (users, folders); ``click.BadParameter`` naming ``--level``."""
    users, sep, dirs = text.partition("=")
    if not sep or not users.strip().isdigit() or int(users) < 1 or not dirs.strip():
        raise click.BadParameter(f"expected USERS=DIR[,DIR...] with USERS >= 1, got {text!r}",
                                 param_hint="--level")
    folders = [Path(d.strip()) for d in dirs.split(",") if d.strip()]
    missing = [str(f) for f in folders if not any(f.glob("records-*.tsv"))]
    if missing:
        raise click.BadParameter(f"no records-*.tsv in {', '.join(missing)}",
                                 param_hint="--level")
    return int(users), folders


def import_sweep(levels: list[tuple[int, list[Path]]], settings: LoadSettings) -> SweepResult:
    """One level per ``(users, folders)``, in the order given."""
    from bench.locust_mix import read_records
    from bench.locust_run import to_level
    from bench.sweep import SweepResult

    out = SweepResult(mode="closed", planned=[float(u) for u, _ in levels])
    for users, folders in levels:
        out.levels.append(to_level(read_records(*folders), users, settings))
    return out


@click.command(name="locust-import")
@click.option("--level", "level_specs", multiple=True, required=True,
              help="USERS=DIR[,DIR...]: the records folders of one Locust run at USERS users "
                   "(one per worker machine); repeat per level.")
@click.option("--url", required=True, help="The endpoint the run measured (for the labels).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Locust worker processes the run had (for the labels).")
@click.option("--warmup-s", type=NON_NEGATIVE, default=2.0, show_default=True)
@click.option("--duration-s", type=POSITIVE, default=10.0, show_default=True)
@click.option("--timeout-s", type=POSITIVE, default=10.0, show_default=True)
@click.option("--slo-ms", type=POSITIVE, default=100.0, show_default=True)
@click.option("--experiment", default=None,
              help="Also log the sweep to MLflow as one benchmark run of this experiment.")
@click.option("--provenance", type=click.Choice(["measured-local", "measured-real"]),
              default="measured-local", show_default=True,
              help="With --experiment: whether the endpoint is a real AWS one.")
def locust_import(level_specs: tuple[str, ...], url: str, workers: int, warmup_s: float,
                  duration_s: float, timeout_s: float, slo_ms: float, experiment: str | None,
                  provenance: str) -> None:
    """Import the records of distributed Locust runs (copied from their workers) as a sweep."""
    from bench.http_report import report
    from bench.load_settings import LoadSettings
    from bench.locust_mix import read_records
    from bench.locust_run import labels

    levels = [parse_level(spec) for spec in level_specs]
    settings = LoadSettings(warmup_s=warmup_s, duration_s=duration_s, timeout_s=timeout_s)
    try:
        res = import_sweep(levels, settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    hosts = sorted({h for _, folders in levels for h in read_records(*folders).hosts})
    click.echo(f"records of {len(hosts)} machine(s): {', '.join(hosts)}")
    report(res, url, settings, slo_ms, labels("locust", workers), experiment, provenance,
           run_name="locust-import")


@click.command(name="locust-mix")
@click.option("--data", required=True,
              help="Preprocessed dataset folder whose test prefixes become the payloads.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="The mix file to write (NISER_LOCUST_MIX of every worker).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Locust workers that will send it (each starts at its share of the pool).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--path", "url_path", default="/invocations", show_default=True,
              help="The endpoint's request path.")
@click.option("--k", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--timeout-s", type=POSITIVE, default=10.0, show_default=True)
def locust_mix(data: str, out_path: Path, workers: int, batch_size: int, url_path: str, k: int,
               timeout_s: float) -> None:
    """Write the payload mix distributed Locust workers send (as ``http --generator locust``)."""
    from bench.locust_mix import write_mix
    from bench.payloads import Payloads
    from niser.data import load_preprocessed

    if not url_path.startswith("/"):
        raise click.BadParameter(f"must start with '/', got {url_path!r}", param_hint="--path")
    dataset = load_preprocessed(data)
    payloads = Payloads.from_samples(dataset.test, dataset.vocab, batch_size=batch_size)
    write_mix(out_path, payloads.batches, url_path, k, timeout_s, workers)
    click.echo(f"{out_path}: {len(payloads.batches)} request bodies for {workers} worker(s)")
