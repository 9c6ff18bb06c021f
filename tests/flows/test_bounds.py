"""The flows' parameter bounds: Prefect's validation names the parameter and the limit, the
schema shows the limits, the checks of the flow body (dataset options, compared metric) run
before anything is created, and the ``niser-mlops`` command line refuses the same values as
click errors naming the option. Nothing here starts a Prefect server or trains."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

import flows.cli as cli_module
from flows import hpo as hpo_module
from flows import train_and_benchmark as tab_module
from flows.cli import main as cli
from flows.hpo import hpo
from flows.parameters import COUNT_LIMITS, check_run
from flows.train_and_benchmark import train_and_benchmark
from niser.train import TrainConfig


@pytest.mark.parametrize(("params", "named", "says"), [
    ({"levels": [1, 2000]}, "levels.1", "above the limit of 1,024: each closed-loop user"),
    ({"levels": list(range(1, 41))}, "levels", "40 items, more than the limit of 32"),
    ({"slo_ms": float("inf")}, "slo_ms", "finite"),
    ({"request_rate_rps": float("nan")}, "request_rate_rps", "finite"),
    ({"burst_rps": float("inf")}, "burst_rps", "finite"),
    ({"burst_fraction": 1.5}, "burst_fraction", "less than or equal to 1"),
    ({"level_seconds": 3601}, "level_seconds", "above the limit of 3,600"),
    ({"warmup_seconds": float("inf")}, "warmup_seconds", ""),
    ({"max_parallel_targets": 17}, "max_parallel_targets", "above the limit of 16"),
    ({"epochs": 1001}, "epochs", "above the limit of 1,000"),
    ({"hyperparameters": {"dim": 5000}}, "hyperparameters.dim", "above the limit of 4,096"),
    ({"hyperparameters": {"lr": "inf"}}, "hyperparameters.lr", "finite"),
])
def test_train_and_benchmark_refuses_an_unbounded_parameter_naming_it(params, named, says):
    with pytest.raises(ParameterTypeError, match=rf"- {named}: ") as info:
        train_and_benchmark.validate_parameters(params)
    assert says in str(info.value)


@pytest.mark.parametrize(("params", "named"), [
    ({"n_trials": 1001}, "n_trials"), ({"shards": 65}, "shards"),
    ({"heartbeat_s": 3601}, "heartbeat_s"), ({"grace_s": 8 * 24 * 3600}, "grace_s"),
    ({"timeout_s": 8 * 24 * 3600}, "timeout_s"), ({"epochs": 1001}, "epochs"),
])
def test_hpo_refuses_counts_above_their_limit_naming_them(params, named):
    with pytest.raises(ParameterTypeError, match=rf"- {named}: .*above the limit of"):
        hpo.validate_parameters(params)


def test_the_limits_are_in_the_schema_prefect_shows():
    props = parameter_schema(train_and_benchmark.fn).model_dump()["properties"]
    assert props["max_parallel_targets"]["maximum"] == 16
    levels = next(p for p in props["levels"]["anyOf"] if p.get("type") == "array")
    assert levels["maxItems"] == 32 and levels["items"]["maximum"] == 1024
    hpo_props = parameter_schema(hpo.fn).model_dump()["properties"]
    assert hpo_props["n_trials"]["maximum"] == COUNT_LIMITS["n_trials"][0]


def test_check_run_refuses_an_unknown_compared_metric_listing_the_valid_ones():
    check_run("synthetic", TrainConfig(), "val_mrr_10")
    with pytest.raises(ValueError, match=r"metric='ndcg'.*val_recall_10, val_mrr_10, "
                                         r"val_recall_20, val_mrr_20"):
        check_run("synthetic", TrainConfig(), "ndcg")


def test_check_run_names_the_registry_when_its_metric_is_not_computed():
    with pytest.raises(ValueError, match=r"registry compares champion and challenger.*ks"):
        check_run("synthetic", TrainConfig(ks=(10,)))


def test_check_run_refuses_synthetic_sizes_above_their_limit():
    with pytest.raises(ValueError, match="n_items"):
        check_run("synthetic:n_items=2000000", TrainConfig())


@pytest.fixture
def nothing_starts(monkeypatch):
    """Fail the test if a flow gets past its checks to the tracking server."""
    def refuse() -> None:
        raise AssertionError("the flow reached the tracking server before refusing")
    monkeypatch.setattr(hpo_module, "check_tracking_server", refuse)
    monkeypatch.setattr(tab_module, "check_tracking_server", refuse)


def test_hpo_refuses_an_unknown_metric_before_anything_starts(nothing_starts):
    with pytest.raises(ValueError, match="metric='val_ndcg_20' is not a metric the evaluation"):
        hpo.fn(metric="val_ndcg_20")


def test_train_and_benchmark_refuses_ks_without_the_registrys_metric_first(nothing_starts):
    with pytest.raises(ValueError, match="val_recall_20"):
        train_and_benchmark.fn(hyperparameters=TrainConfig(ks=(5, 10)))


@pytest.fixture
def no_flow(monkeypatch):
    """The command line must refuse before it sets up a store or runs a flow."""
    def refuse(**_: object) -> None:
        raise AssertionError("the flow was started")
    monkeypatch.setattr(cli_module, "_run", refuse)
    monkeypatch.setattr(cli_module, "_defaults", refuse)


@pytest.mark.parametrize(("args", "option", "says"), [
    (["train", "--epochs", "1001"], "--epochs", "1001 is above the limit of 1,000"),
    (["train", "--hyperparameters", '{"dim": 5000}'], "--hyperparameters",
     "dim: Value error, 5000 is above the limit of 4,096"),
    (["train", "--dataset", "synthetic:n_sessions=20000000"], "--dataset", "n_sessions"),
    (["benchmark", "--levels", "1,2000"], "--levels", "2000 users is outside 1..1024"),
    (["benchmark", "--levels", ",".join(["1"] * 33)], "--levels", "33 levels"),
    (["benchmark", "--slo-ms", "inf"], "--slo-ms", "not a finite number"),
    (["benchmark", "--level-seconds", "nan"], "--level-seconds", "not a finite number"),
    (["benchmark", "--level-seconds", "7200"], "--level-seconds", "3600"),
    (["hpo", "--n-trials", "1001"], "--n-trials", "above the limit of 1,000"),
    (["hpo", "--shards", "65"], "--shards", "above the limit of 64"),
    (["hpo", "--heartbeat-s", "3601"], "--heartbeat-s", "above the limit of 3,600"),
    (["hpo", "--metric", "val_ndcg_20"], "--metric", "val_recall_10, val_mrr_10"),
    (["hpo", "--metric", "recall_20"], "--metric", "test metric"),
])
def test_the_cli_refuses_out_of_bounds_values_naming_the_option(no_flow, args, option, says):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # click wraps long messages
    assert option in text and says in text
