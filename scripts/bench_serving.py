"""Latency vs. concurrency of the Diginetica-size model on real deployments, in one run.

Logs the model to a temporary SQLite MLflow, deploys it to each target in turn (by default the
in-process baseline; the local server with 1 and 2 workers of 1 torch thread: "plain" (batching
off, MLflow's own request path), "lean" (batching off, the guard's lean path) and "batched"
(the defaults: batching on, lean path); 2 instances of 1 worker behind nginx; the same pyfunc behind
LitServe's batching with 1 and 2 inference workers, the outside reference), sweeps the closed-loop
levels with payloads from the Diginetica test prefixes, and prints one table per target and
how a sample of its answers compares with the model in-process (``bench.answers``). With
``--mlflow`` the results are also logged there.

    python scripts/bench_serving.py --recommender /tmp/digi-model      # saved by bench_niser.py
    python scripts/bench_serving.py --levels 1,2,4,8,11,16 --seconds 10
    python scripts/bench_serving.py --levels 1,2,4,8 --targets '[
      {"name": "cpus-0.5", "deployer": "local", "settings": {"torch_threads": 1, "cpus": 0.5}},
      {"name": "cpus-1", "deployer": "local", "settings": {"torch_threads": 1, "cpus": 1}}]'

A shaped deployment (``cpus``) also prints, per level, the CPU its cgroups used per wall second,
the quota, the CFS periods throttled, whether the quota bound where it was meant to
(``bench.level_usage``) and how busy the whole machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from bench.answers import AnswerSample
from bench.load_settings import DEFAULT_LEVELS, LoadSettings
from bench.payloads import Payloads
from bench.report import log_benchmark
from bench.targets import TargetSpec, benchmark_target, validate_targets
from deployers.base import Prediction
from niser.batching import ENV_BATCHING
from niser.data import load_preprocessed
from niser.inference import Recommender, item_popularity
from niser.registry import log_recommender, register
from niser.serving_guard import ENV_REQUEST_PATH
from niser.train import TrainConfig, build_model

NO_BATCHING = {ENV_BATCHING: "0"}  # the model's batching off in the scoring server
# "plain": the pyfunc as MLflow's scoring server runs it, batching off and MLflow's own request
# path (DataFrame, schema enforcement, pyfunc wrapping) instead of the guard's lean one
OFF = {**NO_BATCHING, ENV_REQUEST_PATH: "mlflow"}
DEFAULT_TARGETS: list[dict[str, Any]] = [
    {"name": "inprocess", "deployer": "inprocess"},
    {"name": "plain-1w", "deployer": "local",
     "settings": {"workers": 1, "torch_threads": 1, "environment": OFF}},
    {"name": "plain-2w", "deployer": "local",
     "settings": {"workers": 2, "torch_threads": 1, "environment": OFF}},
    {"name": "lean-1w", "deployer": "local",
     "settings": {"workers": 1, "torch_threads": 1, "environment": NO_BATCHING}},
    {"name": "batched-1w", "deployer": "local",
     "settings": {"workers": 1, "torch_threads": 1}},
    {"name": "batched-2w", "deployer": "local",
     "settings": {"workers": 2, "torch_threads": 1}},
    {"name": "nginx-2x1", "deployer": "local",
     "settings": {"instances": 2, "workers": 1, "torch_threads": 1}},
    # the outside reference: the same pyfunc behind LitServe's batching (the litserve extra)
    {"name": "litserve-1w", "deployer": "local",
     "settings": {"server": "litserve", "workers": 1, "torch_threads": 1,
                  "environment": NO_BATCHING}},
    {"name": "litserve-2w", "deployer": "local",
     "settings": {"server": "litserve", "workers": 2, "torch_threads": 1,
                  "environment": NO_BATCHING}},
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/diginetica"))
    p.add_argument("--recommender", type=Path, help="a saved Recommender (default: untrained "
                   "Diginetica-size weights, which time the same as trained ones)")
    p.add_argument("--targets", help="JSON list of targets (default: " + ", ".join(
        t["name"] for t in DEFAULT_TARGETS) + ")")
    p.add_argument("--sessions-per-request", type=int, default=1,
                   help="sessions in each request (client-side batching)")
    p.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)))
    p.add_argument("--seconds", type=float, default=5.0, help="steady-state window per level")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--mlflow", help="tracking URI to log the benchmark to (default: a temp dir)")
    p.add_argument("--out", type=Path, help="write the per-level statistics as JSON")
    p.add_argument("--check-every", type=int, default=10, help="compare every N-th answer of "
                   "the sweep (up to 300 requests) with the model in-process")
    args = p.parse_args()
    try:
        levels = [int(x) for x in args.levels.split(",")]
    except ValueError:
        p.error(f"--levels must be comma-separated integers, got {args.levels!r}")
    specs: list[TargetSpec] = validate_targets(json.loads(args.targets) if args.targets
                                               else DEFAULT_TARGETS)
    data = load_preprocessed(args.data)
    if args.recommender:
        rec = Recommender.load(args.recommender)
        trained = "trained"
    else:
        config = TrainConfig()
        rec = Recommender(build_model(data.n_items, config), config, data.vocab,
                          item_popularity(data.train, data.n_items))
        trained = "untrained (latency only)"
    tmp = tempfile.TemporaryDirectory(prefix="niser-serving-")
    uri = args.mlflow or f"sqlite:///{tmp.name}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    if not args.mlflow:  # the artifacts go with the temporary database, not into ./mlruns
        mlflow.create_experiment("serving-benchmark",
                                 artifact_location=Path(tmp.name, "artifacts").as_uri())
    mlflow.set_experiment("serving-benchmark")
    with mlflow.start_run(run_name="model"):
        info = log_recommender(rec, data.summary(), {"recall_20": 0.0})
    model_uri = register(info.model_uri).model_uri
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=args.sessions_per_request,
                                     seed=0)
    load = LoadSettings(warmup_s=args.warmup, duration_s=args.seconds)
    print(f"model: {model_uri} ({trained}, {data.n_items + 1} x {rec.model.dim} item table); "
          f"{args.sessions_per_request} session(s) per request; gen CPU: the load generator's "
          "CPU per wall second")
    def reference(sessions: list[list[int]], k: int) -> Prediction:
        answers = rec.recommend(sessions, k)
        return Prediction([a.items for a in answers], [a.scores for a in answers])

    results, runs, agreement = {}, [], {}
    for spec in specs:
        answers = AnswerSample(every=args.check_every)
        outcome = benchmark_target(spec, model_uri, payloads, levels, load, answers=answers)
        if outcome.run is None:
            print(f"{spec.name}: FAILED {outcome.error}")
            continue
        checked = answers.check(reference)
        runs.append(outcome.run)
        print(f"\n{spec.name}  ({outcome.run.provenance}; cold start "
              f"{outcome.run.cold_start_s or float('nan'):.3f} s)")
        print(f"{'users':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}"
              f" {'gen CPU':>7}"
              f" {'CPU used':>8} {'quota':>6} {'throttled':>9} {'bound':>5} {'machine':>7}")
        rows = []
        for lv, st in zip(outcome.run.sweep.levels, outcome.run.sweep.stats(), strict=True):
            row = {k: float(v) for k, v in vars(st).items()}
            line = (f"{int(st.level):>5} {st.p50_ms:>8.2f} {st.p95_ms:>8.2f} {st.p99_ms:>8.2f} "
                    f"{st.throughput_rps:>8.1f} {st.errors + st.timeouts:>6} "
                    f"{100 * lv.cpu_fraction:>6.0f}%")
            if lv.usage is not None:  # a shaped deployment: what its cgroups used
                u = lv.usage
                row |= u.metrics(lv.level, lv.mode)
                bound = {1.0: "yes", 0.0: "NO"}.get(row.get("shaping_bound", -1.0), "-")
                line += (f" {u.cpu_share:>8.3f} {u.quota_total or float('nan'):>6.2f}"
                         f" {u.throttled_periods:>4}/{u.periods:<4} {bound:>5}"
                         f" {100 * u.machine_busy:>6.0f}%")
            print(line)
            rows.append(row)
        sat = outcome.run.sweep.stats()
        print(f"saturation throughput (max req/s over levels): "
              f"{max(st.throughput_rps for st in sat):.1f}; shaping: {outcome.run.shaping}")
        print(checked.line())
        results[spec.name] = rows
        agreement[spec.name] = vars(checked)
    if runs:
        bench = log_benchmark(runs, args.slo_ms, experiment_name="serving-benchmark")
        print(f"\nlogged to {uri}, run {bench.parent_run_id}")
    if args.out:
        args.out.write_text(json.dumps({"model": trained, "levels": levels,
                                        "cpu_count": os.cpu_count(),
                                        "results": results, "agreement": agreement},
                                       indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
