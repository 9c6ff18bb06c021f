"""A replay into MLflow, logged like a benchmark target (``bench.report``).

Promises:

- One parent run (``run_name``) in ``experiment`` with one child run named
  ``session-server:<deployer>``, tagged ``benchmark.provenance`` by ``bench.provenance.of_target``
  of the deployer behind the server, and the parent tagged ``benchmark.kind=replay``.
- The child gets what a benchmark target gets for one open-loop level (step = the intended click
  rate, rounded): ``latency_p50_ms`` ... ``latency_max_ms`` (end-to-end, from intended times),
  ``throughput_rps``, ``error_rate``, ``timeouts``, ``requests``, ``late_starts``,
  ``generator_cpu_fraction``, ``raw/latencies.parquet`` and ``summary.json``; plus, at step 0,
  the replay's own metrics (``bench.replay_summary.replay_metrics``: ``manager_overhead_p50_ms``,
  ``manager_overhead_p95_ms``, ``endpoint_latency_p50_ms``, ``errors``, ``mismatches`` when
  checked, ...), the artifact ``raw/clicks.parquet`` (every click record), the errors by status
  and the first mismatches as tags. Every metric is rounded (``bench.rounding``).
- Params are the replay's settings; a URL is logged as ``http://HOST:PORT`` only, so no
  credential in it reaches MLflow. No cost hook runs (a replay prices nothing).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.tracking import MlflowClient

from bench.provenance import of_target
from bench.replay import ReplayResult
from bench.replay_check import CheckResult
from bench.replay_summary import ReplaySummary, replay_metrics
from bench.report import BenchmarkRun, TargetRun, log_benchmark
from bench.sweep import SweepResult
from deployers.base import Description


def target_name(deployer: str) -> str:
    """The child run's name: ``session-server:<deployer>``."""
    return f"session-server:{deployer}"


def safe_url(url: str) -> str:
    """``url`` without user info, path or query: ``http://HOST:PORT``."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def log_replay(
    result: ReplayResult, summary: ReplaySummary, *, deployer: str, params: dict[str, str],
    experiment: str = "replay", run_name: str = "replay", slo_ms: float = 100.0,
    description: Description | None = None, checked: CheckResult | None = None,
    client: MlflowClient | None = None,
) -> BenchmarkRun:
    """Log one replay (see the module docstring); the run ids come back."""
    client = client or MlflowClient()
    name = target_name(deployer)
    notes = {"errors_by_status": json.dumps(summary.errors_by_status),
             "session_prefix": result.run_id}
    if checked is not None and checked.first:
        notes["first_mismatches"] = "\n".join(m.describe() for m in checked.first)
    if checked is not None and checked.first_error:
        notes["first_direct_error"] = checked.first_error
    all_params = {**params, "replay.run_id": result.run_id,
                  **{f"replay.{k}": str(v) for k, v in result.settings.model_dump().items()}}
    if "url" in all_params:
        all_params["url"] = safe_url(all_params["url"])
    target = TargetRun(
        name, SweepResult("open", [result.level], [result.level.level]), description,
        provenance=of_target(deployer), params=all_params, metrics=replay_metrics(summary),
        notes=notes,
    )
    run = log_benchmark([target], slo_ms, experiment_name=experiment, run_name=run_name,
                        hooks=[], tags={"benchmark.kind": "replay"}, client=client)
    with tempfile.TemporaryDirectory(prefix="niser-replay-") as tmp:
        path = Path(tmp) / "clicks.parquet"
        result.frame().to_parquet(path, index=False)
        client.log_artifact(run.child_run_ids[name], str(path), "raw")
    return run
