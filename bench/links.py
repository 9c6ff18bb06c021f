"""Deep links into the MLflow UI, always in its classic (machine-learning) view.

MLflow 3 opens in its GenAI view unless a URL carries ``workflowType=machine_learning``; in its
hash router the query goes after the route (``#/experiments/1/runs/abc?workflowType=...``).

Promises:

- ``ui_base(tracking_uri)`` is the server's address for an ``http(s)`` tracking URI, else None
  (a SQLite or file store has no UI to link to).
- ``run_url``, ``experiment_url`` and ``metric_chart_url`` return absolute URLs when given a
  base, and the relative hash route (``#/...``) when the base is ``""``; a relative link works
  from any page of the same MLflow UI (e.g. in a run's description), whatever host serves it.
- ``metric_chart_url`` opens MLflow's metric page: every run in ``run_ids`` as a line per metric
  in ``metrics``, against ``step`` (the benchmark's concurrency level).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

CLASSIC = "workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str | None:
    """``http://host:port`` of an HTTP tracking server, else None."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return None


def _root(base: str) -> str:
    return f"{base}/#" if base else "#"


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs table of one experiment."""
    return f"{_root(base)}/experiments/{experiment_id}?{CLASSIC}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's overview page (description, tags, metrics)."""
    return f"{_root(base)}/experiments/{experiment_id}/runs/{run_id}?{CLASSIC}"


def model_version_url(base: str, name: str, version: str) -> str:
    """One registered model version."""
    return f"{_root(base)}/models/{quote(name, safe='')}/versions/{version}?{CLASSIC}"


def _json(value: object) -> str:
    return quote(json.dumps(value, separators=(",", ":")), safe="")


def metric_chart_url(base: str, experiment_id: str, run_ids: Sequence[str],
                     metrics: Sequence[str]) -> str:
    """The chart of ``metrics`` (the first is the page's main one) of every run, against step."""
    if not run_ids or not metrics:
        raise ValueError(f"a chart needs runs and metrics, got runs={list(run_ids)} "
                         f"metrics={list(metrics)}")
    return (f"{_root(base)}/metric?runs={_json(list(run_ids))}&metric={_json(metrics[0])}"
            f"&experiments={_json([experiment_id])}&plot_metric_keys={_json(list(metrics))}"
            f"&x_axis=step&{CLASSIC}")
