"""Command line: ``python -m bench.cli calibrate ...`` and ``python -m bench.cli compare ...``.

- ``calibrate``: the honesty check (``bench.calibrate``); prints the table and exits 1 when a level
  misses the bound.
- ``compare``: the benchmark table across target runs from MLflow (children of a parent run, or
  all target runs of an experiment).
- ``http``: a closed-loop sweep against any pyfunc scoring endpoint (e.g. ``mlflow models serve``)
  with payloads from a dataset's test sessions, printing the per-level statistics.

A bad argument exits with status 2 and a message naming the option.
"""

from __future__ import annotations

import argparse
import logging
import sys

import pandas as pd

from bench.stats import saturation_throughput, stats_frame


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4,8, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    cal = sub.add_parser("calibrate", help="measure a stub server with a known delay")
    cal.add_argument("--delay-ms", type=_positive, default=16.0, help="stub delay (default 16)")
    cal.add_argument("--users", type=_int_list, default=[1, 2, 4, 8, 16, 24, 32],
                     help="comma-separated user counts (default 1,2,4,8,16,24,32)")
    cal.add_argument("--warmup-s", type=_non_negative, default=1.0, help="warm-up per level")
    cal.add_argument("--duration-s", type=_positive, default=3.0, help="window per level")

    cmp = sub.add_parser("compare", help="table of benchmark runs from MLflow")
    which = cmp.add_mutually_exclusive_group(required=True)
    which.add_argument("--parent-run-id", help="the benchmark's parent run")
    which.add_argument("--experiment", help="every target run of this experiment")
    cmp.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")

    http = sub.add_parser("http", help="closed-loop sweep against a scoring endpoint")
    http.add_argument("--url", required=True, help="e.g. http://127.0.0.1:5000/invocations")
    http.add_argument("--data", required=True,
                      help="preprocessed dataset folder (train_sessions.txt, test.tsv) whose "
                           "test prefixes become the payloads")
    http.add_argument("--batch-size", type=int, default=1, help="sessions per request")
    http.add_argument("--users", type=_int_list, default=[1, 2, 4, 6, 8, 11, 16])
    http.add_argument("--warmup-s", type=_non_negative, default=2.0)
    http.add_argument("--duration-s", type=_positive, default=10.0)
    http.add_argument("--timeout-s", type=_positive, default=10.0)
    http.add_argument("--slo-ms", type=_positive, default=100.0)
    return ap


def _calibrate(args: argparse.Namespace) -> int:
    from bench.calibrate import calibrate, format_table

    cal = calibrate(args.delay_ms, args.users, args.warmup_s, args.duration_s)
    print(format_table(cal))
    return 0 if cal.passed else 1


def _compare(args: argparse.Namespace) -> int:
    import mlflow

    from bench.report import compare_table

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    table = compare_table(args.parent_run_id, args.experiment)
    if table.empty:
        print("no benchmark target runs found", file=sys.stderr)
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    return 0


def _http(args: argparse.Namespace) -> int:
    from bench.load import LoadSettings, sweep
    from bench.payloads import Payloads
    from deployers.http import HttpInvoker
    from niser.data import load_preprocessed

    data = load_preprocessed(args.data)
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=args.batch_size)
    settings = LoadSettings(warmup_s=args.warmup_s, duration_s=args.duration_s,
                            timeout_s=args.timeout_s)
    res = sweep(HttpInvoker(args.url, timeout_s=args.timeout_s), payloads, args.users, settings)
    stats = res.stats()
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(stats_frame(stats).to_string(index=False))
    print(f"saturation throughput (p95 <= {args.slo_ms:g} ms): "
          f"{saturation_throughput(stats, args.slo_ms)}")
    if res.stopped_reason:
        print(f"stopped early: {res.stopped_reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    handler = {"calibrate": _calibrate, "compare": _compare, "http": _http}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
