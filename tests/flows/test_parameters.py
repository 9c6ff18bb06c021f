"""The flows' parameters: Prefect's typed validation, the schema it shows and the checks run first
in the flow body. Nothing here starts a Prefect server or trains."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from bench.targets import TargetSpec, validate_targets
from flows.hpo import hpo
from flows.parameters import train_config
from flows.train_and_benchmark import DEFAULT_TARGETS, train_and_benchmark
from niser.train import TrainConfig

INPROCESS = {"name": "inproc", "deployer": "inprocess"}


def _schema_definitions(fn: Any) -> dict[str, Any]:
    return parameter_schema(fn).model_dump()["definitions"]


def test_schema_lists_every_train_config_field_and_the_target_spec_fields():
    definitions = _schema_definitions(train_and_benchmark.fn)
    assert set(definitions["TrainConfig"]["properties"]) == set(TrainConfig.model_fields)
    assert set(definitions["TargetSpec"]["properties"]) == {"name", "deployer", "settings"}
    assert set(_schema_definitions(hpo.fn)["TrainConfig"]["properties"]) == set(
        TrainConfig.model_fields)


def test_json_parameters_become_a_train_config_and_target_specs():
    params = train_and_benchmark.validate_parameters(
        {"hyperparameters": {"dim": 16, "lr": "0.01"}, "targets": [INPROCESS]})
    assert params["hyperparameters"] == TrainConfig(dim=16, lr=0.01)
    assert params["targets"] == [TargetSpec(name="inproc", deployer="inprocess")]


@pytest.mark.parametrize(("params", "named"), [
    ({"hyperparameters": {"learning_rate": 0.1}}, "hyperparameters.learning_rate"),
    ({"hyperparameters": {"lr": -1}}, "hyperparameters.lr"),
    ({"targets": [INPROCESS, {"name": "x", "deployer": "local", "bogus": 1}]}, "targets.1.bogus"),
    ({"targets": [{"name": "bad name!", "deployer": "local"}]}, "targets.0.name"),
    ({"levels": [0, 2]}, "levels.0"),
    ({"levels": []}, "levels"),
    ({"slo_ms": 0}, "slo_ms"),
    ({"epochs": 0}, "epochs"),
])
def test_train_and_benchmark_refuses_a_bad_parameter_naming_its_path(params, named):
    with pytest.raises(ParameterTypeError, match=rf"- {named}: "):
        train_and_benchmark.validate_parameters(params)


def test_hpo_refuses_zero_trials_and_unknown_hyperparameters_naming_them():
    with pytest.raises(ParameterTypeError, match=r"- n_trials: "):
        hpo.validate_parameters({"n_trials": 0})
    with pytest.raises(ParameterTypeError, match=r"- hyperparameters.width: "):
        hpo.validate_parameters({"hyperparameters": {"width": 3}})


def test_epochs_fills_in_what_hyperparameters_leave_unset():
    config = train_config(TrainConfig.model_validate({"dim": 16}), epochs=1)
    assert (config.epochs, config.dim) == (1, 16)
    assert train_config(None, epochs=2, seed=7) == TrainConfig(epochs=2, seed=7)


def test_epochs_given_in_hyperparameters_win_over_the_epochs_parameter():
    assert train_config(TrainConfig.model_validate({"epochs": 4}), epochs=1).epochs == 4


def test_unknown_deployer_is_refused_naming_the_target_and_the_valid_deployers():
    specs = [TargetSpec(**INPROCESS), TargetSpec(name="x", deployer="nope")]
    with pytest.raises(ValueError, match=r"targets\[1\]\.deployer='nope': .*inprocess.*local"):
        validate_targets(specs)


def test_settings_the_deployer_refuses_are_named_with_the_target():
    specs = [TargetSpec(name="x", deployer="local", settings={"bogus": 1})]
    with pytest.raises(ValueError, match=r"(?s)targets\[0\]\.settings \(x\):.*unknown key 'bogus'"):
        validate_targets(specs)


def test_duplicate_target_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        validate_targets([TargetSpec(**INPROCESS)] * 2)


def test_the_default_targets_pass_the_checks():
    assert [s.name for s in validate_targets(DEFAULT_TARGETS)] == [
        "local-1x2", "local-2x1", "sagemaker-c5-large", "lambda-1024mb"]
