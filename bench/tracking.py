"""The MLflow tracking store the benchmark commands use when none is configured."""

from __future__ import annotations

import os
from pathlib import Path


def use_default_tracking() -> None:
    """The tracking store ``niser-mlops train`` uses when MLFLOW_TRACKING_URI is unset:
    ``.state/mlflow.db`` (SQLite) in the current directory."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        state = Path(".state").resolve()
        state.mkdir(exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{state / 'mlflow.db'}"


HEALTH_TIMEOUT_S = 5.0


def check_tracking_server(uri: str | None = None, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Raise ``RuntimeError`` naming the server and what to do when the MLflow tracking server
    of ``uri`` (default: the current tracking URI) does not answer ``GET /health`` within
    ``timeout_s``: a flow checks this before it starts, instead of failing after MLflow's
    client has retried for minutes. A file or database URI (no server) passes."""
    import urllib.error
    import urllib.request

    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    url = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            problem = f"answered {answer.status}"
    except urllib.error.HTTPError as exc:
        problem = f"answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"did not answer within {timeout_s:g} s ({getattr(exc, 'reason', exc)})"
    raise RuntimeError(f"the MLflow tracking server {uri} {problem} on /health; start it "
                       "(`python scripts/services.py start`) or set MLFLOW_TRACKING_URI to one "
                       "that runs")
