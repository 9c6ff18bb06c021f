"""``niser-mlops replay``: real sessions through a session server, click by click, on schedule.

    niser-mlops replay --deployer local --deployment D --data ../shared/data/diginetica
    niser-mlops replay --url http://127.0.0.1:8080 --deployment D --data train-item-views.csv \\
        --pace recorded --speedup 60 --last-days 7

Without ``--url`` a session server is started for ``--deployer``/``--deployment``
(``bench.replay_server``) and stopped at the end. The summary table is printed, the replay is
logged to MLflow (``bench.replay_report``); with ``--check`` (the default) every answer is compared
with the deployment called directly (``bench.replay_check``). Exits 1 when a click failed, a
recommendation differed or a direct call failed; 2 on a bad option, naming it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

import click

from bench.cli_options import NON_NEGATIVE, POSITIVE

if TYPE_CHECKING:
    from bench.replay_schedule import Pace
    from deployers.base import Description, Invoker



def direct_invoker(deployer: str, deployment: str) -> Invoker:
    """The deployment's own invoker, for the equality check (tests replace this seam)."""
    from deployers.registry import get_deployer

    return get_deployer(deployer).invoker(deployment)


def _description(deployer: str, deployment: str | None) -> Description | None:
    """The deployment's description for the run's params, or None when it cannot be read."""
    if deployment is None:
        return None
    from deployers.registry import get_deployer

    try:
        return get_deployer(deployer).describe(deployment)
    except Exception as exc:  # a replay against a bare --url still gets logged
        click.echo(f"note: no description of {deployer}/{deployment}: {exc}", err=True)
        return None


def _bad(message: str, option: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint=option)


@click.command(name="replay")
@click.option("--deployer", default="local", show_default=True,
              help="The deployer behind the session server (its provenance labels the run).")
@click.option("--deployment", help="The deployment; needed to start a server or to --check.")
@click.option("--url", help="An already running session server, http://HOST:PORT (default: start "
                            "one for --deployer/--deployment).")
@click.option("--data", required=True,
              help="A preprocessed folder (its test.tsv), a raw Diginetica .csv or a raw "
                   "Yoochoose .dat click log.")
@click.option("--sessions", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Replay the first N sessions.")
@click.option("--min-length", type=click.IntRange(min=1), default=2, show_default=True,
              help="Skip sessions with fewer clicks.")
@click.option("--last-days", type=click.IntRange(min=1),
              help="Raw logs: only sessions dated in the log's last D days (Diginetica's test "
                   "split is 7).")
@click.option("--pace", type=click.Choice(["recorded", "poisson"]),
              help="recorded: the log's click times; poisson: Poisson session arrivals at "
                   "--rate, --think-s apart. Default: recorded when the data has click times.")
@click.option("--speedup", type=POSITIVE, default=1.0, show_default=True,
              help="Divide recorded times and --think-s by this.")
@click.option("--rate", type=POSITIVE, default=10.0, show_default=True,
              help="New sessions per second, when sessions start as a Poisson process.")
@click.option("--think-s", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Seconds between the clicks of a session (poisson pace).")
@click.option("--k", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--max-clicks", type=click.IntRange(min=1), default=50, show_default=True,
              help="The server's --max-clicks: the clicks it sends to the model.")
@click.option("--store", help="--store for a started server (sqlite:///PATH or redis://...).")
@click.option("--timeout-s", type=POSITIVE, default=10.0, show_default=True,
              help="A click answered later than this after its intended time is a timeout.")
@click.option("--max-workers", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most sessions in flight at once.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare every answer with the deployment called directly.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Then replay the same schedule straight to the deployment, and report what "
                   "the session manager adds over it.")
@click.option("--experiment", default="replay", show_default=True, help="MLflow experiment.")
@click.option("--slo-ms", type=POSITIVE, default=100.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the Poisson arrivals.")
@click.option("--start-timeout-s", type=POSITIVE, default=120.0, show_default=True,
              help="How long a started server may take to answer /health.")
def replay(deployer: str, deployment: str | None, url: str | None, data: str, sessions: int,
           min_length: int, last_days: int | None, pace: str | None, speedup: float,
           rate: float, think_s: float, k: int, max_clicks: int, store: str | None,
           timeout_s: float, max_workers: int, check: bool, baseline: bool, experiment: str, slo_ms: float,
           seed: int, start_timeout_s: float) -> None:
    """Replay real sessions through a session server, click by click."""
    from contextlib import nullcontext

    from bench.provenance import of_target
    from bench.replay import ReplaySettings
    from bench.replay import replay as run_replay
    from bench.replay_check import check as check_answers
    from bench.replay_client import SessionClient
    from bench.replay_direct import DirectSender
    from bench.replay_report import log_replay
    from bench.replay_schedule import schedule
    from bench.replay_server import SessionServerError, running_session_server, session_server_argv
    from bench.replay_summary import format_summary, summarize_replay, with_baseline
    from bench.replay_trace import load_trace
    from bench.tracking import use_default_tracking
    from deployers.registry import UnknownDeployerError, deployer_class

    try:
        deployer_class(deployer)
    except UnknownDeployerError as exc:
        raise _bad(str(exc), "--deployer") from None
    if deployment is None and (url is None or check or baseline):
        why = ("to start a session server" if url is None
               else "for --check" if check else "for --baseline")
        raise _bad(f"give the deployment's name {why} (or --url with --no-check --no-baseline)",
                   "--deployment")
    if url is not None:
        try:
            SessionClient(url)
        except ValueError as exc:
            raise _bad(str(exc), "--url") from None
    try:
        trace = load_trace(data, sessions=sessions, min_length=min_length, last_days=last_days)
    except ValueError as exc:
        raise _bad(str(exc), "--last-days" if "last_days" in str(exc) else "--data") from None
    chosen = cast("Pace", pace or ("recorded" if trace.timed else "poisson"))
    try:
        plan = schedule(trace, chosen, rate=rate, speedup=speedup, think_s=think_s, seed=seed)
    except ValueError as exc:
        raise _bad(str(exc), "--pace") from None
    settings = ReplaySettings(k=k, timeout_s=timeout_s, max_workers=max_workers)
    use_default_tracking()
    click.echo(f"replaying {len(trace.sessions):,} sessions ({trace.clicks:,} clicks) of {data}, "
               f"{chosen} pace (session starts: {plan.starts}), over {plan.duration_s:,.1f} s",
               err=True)
    server = (nullcontext(url) if url is not None else running_session_server(
        session_server_argv(deployer, str(deployment), max_clicks=max_clicks, store=store),
        timeout_s=start_timeout_s))
    try:
        with server as base:
            client = SessionClient(base, timeout_s=timeout_s)
            try:
                client.health()
            except RuntimeError as exc:
                raise SessionServerError(str(exc)) from None
            try:
                result = run_replay(client, trace, plan, settings)
            finally:
                client.close()
    except SessionServerError as exc:
        raise click.ClickException(str(exc)) from None
    checked = None
    if check:
        checked = check_answers(result, trace, direct_invoker(deployer, str(deployment)), k=k,
                                max_clicks=max_clicks)
    summary = summarize_replay(result, checked.mismatches if checked else None)
    if baseline:
        click.echo("replaying the same schedule straight to the deployment (baseline)", err=True)
        sender = DirectSender(direct_invoker(deployer, str(deployment)), max_clicks=max_clicks)
        summary = with_baseline(summary, run_replay(sender, trace, plan, settings))
    if checked is not None:
        summary.notes.extend(m.describe() for m in checked.first)
        if checked.direct_errors:
            summary.notes.append(f"{checked.direct_errors} direct calls failed, first: "
                                 f"{checked.first_error}")
    params = {"data": str(data), "trace.source": trace.source, "trace.sessions": str(sessions),
              "trace.min_length": str(min_length), "trace.last_days": str(last_days),
              "pace": chosen, "schedule.starts": plan.starts, "speedup": f"{speedup:g}",
              "rate": f"{rate:g}", "think_s": f"{think_s:g}", "seed": str(seed),
              "max_clicks": str(max_clicks), "check": str(check), "baseline": str(baseline),
              "deployer": deployer,
              "deployment": str(deployment), "url": base}
    run = log_replay(result, summary, deployer=deployer, params=params, experiment=experiment,
                     slo_ms=slo_ms, description=_description(deployer, deployment),
                     checked=checked)
    click.echo(format_summary(summary, of_target(deployer)))
    click.echo(f"MLflow run {run.parent_run_id} (experiment {experiment!r})", err=True)
    if summary.errors or summary.mismatches or (checked is not None and checked.direct_errors):
        sys.exit(1)
