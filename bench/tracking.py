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
