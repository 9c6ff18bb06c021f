"""Deep links into the MLflow UI open its classic view, on the page they name."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote

import pytest

from bench.links import (
    experiment_url,
    metric_chart_url,
    model_version_url,
    run_url,
    ui_base,
)

BASE = "http://127.0.0.1:5000"


def test_only_an_http_tracking_uri_has_a_ui_to_link_to():
    assert ui_base("http://127.0.0.1:5000/") == BASE
    assert ui_base("https://mlflow.example.com") == "https://mlflow.example.com"
    assert ui_base("sqlite:///tmp/mlflow.db") is None
    assert ui_base("file:///tmp/mlruns") is None


def test_every_link_opens_the_classic_view_after_the_route():
    urls = [experiment_url(BASE, "3"), run_url(BASE, "3", "abc"),
            model_version_url(BASE, "niser", "7"),
            metric_chart_url(BASE, "3", ["a", "b"], ["latency_p50_ms"])]
    for url in urls:
        _route, query = url.split("#", 1)[1].split("?", 1)
        assert parse_qs(query)["workflowType"] == ["machine_learning"], url
    assert run_url(BASE, "3", "abc") == (
        f"{BASE}/#/experiments/3/runs/abc?workflowType=machine_learning")
    assert model_version_url(BASE, "niser", "7").startswith(f"{BASE}/#/models/niser/versions/7?")


def test_an_empty_base_gives_a_relative_hash_route():
    assert run_url("", "3", "abc") == "#/experiments/3/runs/abc?workflowType=machine_learning"
    assert metric_chart_url("", "3", ["a"], ["m"]).startswith("#/metric?")


def test_the_chart_link_names_every_run_and_metric_against_step():
    url = metric_chart_url("", "3", ["run-a", "run-b"], ["latency_p50_ms", "latency_p95_ms"])
    query = parse_qs(url.split("?", 1)[1])
    assert json.loads(unquote(query["runs"][0])) == ["run-a", "run-b"]
    assert json.loads(query["metric"][0]) == "latency_p50_ms"
    assert json.loads(query["plot_metric_keys"][0]) == ["latency_p50_ms", "latency_p95_ms"]
    assert json.loads(query["experiments"][0]) == ["3"] and query["x_axis"] == ["step"]


def test_a_chart_without_runs_is_refused():
    with pytest.raises(ValueError, match="runs"):
        metric_chart_url(BASE, "3", [], ["latency_p95_ms"])
