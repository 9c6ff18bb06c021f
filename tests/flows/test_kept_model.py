"""A trained model is saved before it is logged: a tracking server that is down loses nothing."""

from __future__ import annotations

import socket

import mlflow
import pytest

from flows import tasks
from niser.inference import Recommender


def test_a_model_that_cannot_be_logged_is_kept_and_named(tiny_training, tmp_path, monkeypatch):
    data, result = tiny_training
    with socket.socket() as sock:  # a tracking server that is not there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("NISER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RuntimeError, match=r"the trained model is kept in .*models/abc123"):
            tasks.log_model.fn(result, data, "abc123")
    finally:
        mlflow.set_tracking_uri(previous)
    kept = Recommender.load(tmp_path / "models" / "abc123")
    assert kept.recommend([[100000]], 5)[0].items  # the whole model, usable


def test_a_kept_model_folder_is_named_by_a_run_id_only():
    with pytest.raises(ValueError, match="is not a run id"):
        tasks.kept_model_dir("../elsewhere")
