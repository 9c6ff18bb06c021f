"""``niser-mlops sweep``: list what deployments left running, with what each costs per month, and
delete it.

    niser-mlops sweep                     # list: AWS (or the moto server) and this machine
    niser-mlops sweep --delete            # asks, then deletes everything listed
    niser-mlops sweep --delete --yes      # no question (scripts, CI)
    niser-mlops sweep --no-aws            # this machine only

With ``MLFLOW_TRACKING_URI`` set, MLflow runs left RUNNING by a process of this machine that is
gone are listed too (``mlflow-run``); ``--delete`` marks them FAILED (``bench.stale_runs``).

Exit status: 0 when nothing is left (after ``--delete``: when everything went), 1 otherwise, so
a script can tell.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import click
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, NoRegionError

from bench import prices, stale_runs
from bench.leftover_cost import Monthly, monthly
from deployers import leftovers
from deployers.leftovers import Leftover


def _age(row: Leftover, now: dt.datetime) -> str:
    s = row.age_s(now)
    if s is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def table(rows: list[Leftover], costs: list[Monthly], now: dt.datetime) -> str:
    """The rows as a fixed-width table, with a total line."""
    head = ("KIND", "NAME", "WHERE", "DEPLOYMENT", "RUN", "AGE", "USD/MONTH", "WHAT")
    body = [(r.kind, r.name, r.where, r.deployment or "-", (r.run_id or "-")[:12], _age(r, now),
             f"{c.usd:,.2f}", "; ".join(x for x in (r.detail, c.basis) if x))
            for r, c in zip(rows, costs, strict=True)]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row[:-1], widths, strict=True)) + "  "
             + row[-1] for row in [head, *body]]
    total = sum(c.usd for c in costs)
    moto = " (moto rows: what AWS would charge; nothing is billed)" if any(
        r.where == "moto" for r in rows) else ""
    lines.append(f"{len(rows)} left; {total:,.2f} USD per month if left running{moto}")
    return "\n".join(lines)


def _runs(local: bool) -> list[Leftover]:
    """RUNNING MLflow runs of dead processes of this host (``bench.stale_runs``), on the
    tracking server of ``MLFLOW_TRACKING_URI`` (none set: none looked for)."""
    if not local or not os.environ.get("MLFLOW_TRACKING_URI"):
        return []
    try:
        from mlflow import MlflowClient

        return stale_runs.find(MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]))
    except Exception as exc:  # the tracking server is down: say so, list the rest
        click.echo(f"MLflow not reachable ({type(exc).__name__}: {exc}); runs left RUNNING are"
                   " not listed", err=True)
        return []


def _find(aws: bool, local: bool) -> list[Leftover]:
    try:
        rows = leftovers.find(aws_resources=aws, local=local)
    except (NoCredentialsError, EndpointConnectionError, NoRegionError) as exc:
        if not aws:
            raise
        click.echo(f"AWS not reachable ({type(exc).__name__}: {exc}); listing this machine only"
                   " (--no-aws to skip AWS)", err=True)
        rows = leftovers.find(aws_resources=False, local=local)
    return rows + _runs(local)


def leftover_line(aws: bool) -> str | None:
    """One sentence on what earlier runs left (``None`` when nothing): the count, the monthly
    cost if left running, and the command to see and remove it. Never raises: a start-up report
    must not stop the start."""
    try:
        rows = [r for r in leftovers.find(aws_resources=aws) if not r.in_use]
        tbl = prices.load()
        usd = sum(monthly(r, tbl).usd for r in rows)
    except Exception as exc:  # AWS unreachable, no rights: say so, go on
        return f"could not look for leftovers of earlier runs ({type(exc).__name__}: {exc})"
    if not rows:
        return None
    kinds = ", ".join(sorted({r.kind for r in rows}))
    return (f"left by earlier runs: {len(rows)} resources ({kinds}), {usd:,.2f} USD per month if"
            " left running; `niser-mlops sweep` lists them, `niser-mlops sweep --delete`"
            " removes them")


@click.command()
@click.option("--delete", "do_delete", is_flag=True, help="Delete everything listed.")
@click.option("--yes", is_flag=True, help="With --delete: do not ask.")
@click.option("--aws/--no-aws", default=True, show_default=True,
              help="Look in AWS (or the moto server of AWS_ENDPOINT_URL).")
@click.option("--local/--no-local", default=True, show_default=True,
              help="Look at this machine's local deployments, processes and cgroups.")
@click.option("--region", default=None, help="Price region (default: the table's).")
def sweep(do_delete: bool, yes: bool, aws: bool, local: bool, region: str | None) -> None:
    """List (and with --delete remove) every resource deployments left, with its monthly cost."""
    if yes and not do_delete:
        raise click.BadParameter("--yes only goes with --delete", param_hint="--yes")
    tbl = prices.load()
    rows = _find(aws, local)
    now = dt.datetime.now(dt.UTC)
    click.echo(table(rows, [monthly(r, tbl, region) for r in rows], now) if rows
               else "nothing left: no deployment resources found")
    if not rows or not do_delete:
        sys.exit(1 if rows else 0)
    if not yes:
        click.confirm(f"Delete these {len(rows)} resources?", abort=True)
    problems = leftovers.delete(rows)
    for line in problems:
        click.echo(f"problem: {line}", err=True)
    left = _find(aws, local)
    click.echo(f"deleted; {len(left)} left" + ("" if not left else ":\n" + table(
        left, [monthly(r, tbl, region) for r in left], dt.datetime.now(dt.UTC))))
    sys.exit(1 if left else 0)
