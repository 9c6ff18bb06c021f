"""Soak: the local deployer at saturation for minutes on end; errors, p99 and server RSS per minute.

    python scripts/soak.py [--minutes 10] [--users 8] [--dataset DATASET] [--instances 1]

Registers an untrained NISER of ``--dataset``'s size (default: Diginetica from ../shared/data when
present, else the synthetic generator; latency and memory depend on the size, not the weights)
in a temporary SQLite MLflow, deploys it with the local deployer (``mlflow models serve`` behind
nginx with several instances), then runs the closed-loop generator with ``--users`` users, one
60 s window per minute, and prints per minute: requests, errors, p50 and p99 (ms), and the RSS of
every process of the deployment (servers, their workers, nginx), summed. The last line gives the
total errors and the RSS growth from minute 2 to the last minute. Everything it started is torn
down at the end (and on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow
import psutil

from bench import provenance
from bench.closed_loop import closed_loop
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from deployers import ownership
from deployers.registry import get_deployer
from niser.inference import Recommender, item_popularity
from niser.raw import load_dataset
from niser.registry import log_recommender
from niser.train import TrainConfig, build_model

DIGINETICA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diginetica"


def deployment_rss_mb(name: str) -> float:
    """RSS of every process of deployment ``name`` (marked processes and their children)."""
    total = 0
    for marked in ownership.marked_processes():
        if marked.deployment != name:
            continue
        try:
            top = psutil.Process(marked.pid)
            for proc in [top, *top.children(recursive=True)]:
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--dataset", default=str(DIGINETICA) if DIGINETICA.is_dir() else "synthetic")
    args = p.parse_args()
    if args.minutes < 2 or args.users < 1 or args.instances < 1:
        p.error("--minutes >= 2, --users >= 1, --instances >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="niser-soak-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "soak", artifact_location=(tmp / "artifacts").as_uri()))
    data = load_dataset(args.dataset)
    config = TrainConfig()
    rec = Recommender(build_model(data.n_items, config), config, data.vocab,
                      item_popularity(data.train, data.n_items))
    with mlflow.start_run(run_name="soak"):
        model_uri = log_recommender(rec, data.summary(), {"recall_20": 0.0}).model_uri
    deployer = get_deployer("local")
    name = f"soak-{os.getpid()}"
    endpoint = deployer.deploy(model_uri, {"instances": args.instances}, name)
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
    label = provenance.of_target("local")
    print(f"soak: {data.name} ({data.n_items} items), {args.instances} instance(s), "
          f"{args.users} users, {args.minutes} x 60 s, {psutil.cpu_count()} cores; every figure "
          f"{provenance.describe(label)}")
    print(f"{'minute':>6} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rss MB':>8}")
    rss: list[float] = []
    errors = 0
    try:
        for minute in range(1, args.minutes + 1):
            level = closed_loop(endpoint.invoke, payloads, args.users,
                                LoadSettings(warmup_s=0.0, duration_s=60.0))
            stats = level.stats()
            bad = stats.errors + stats.timeouts
            errors += bad
            rss.append(deployment_rss_mb(name))
            print(f"{minute:>6} {stats.count:>9} {bad:>7} {stats.p50_ms:>8.2f} "
                  f"{stats.p99_ms:>8.2f} {rss[-1]:>8.0f}", flush=True)
    finally:
        deployer.teardown(name)
    growth = 100.0 * (rss[-1] - rss[1]) / rss[1] if len(rss) > 1 and rss[1] else float("nan")
    print(f"soak ({label}): {errors} errors in {len(rss)} minutes; RSS {rss[1]:.0f} MB at minute 2, "
          f"{rss[-1]:.0f} MB at minute {len(rss)}: growth {growth:+.1f} % "
          f"({time.strftime('%Y-%m-%d %H:%M')})")


if __name__ == "__main__":
    main()
