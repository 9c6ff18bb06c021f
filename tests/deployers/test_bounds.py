"""Deployer settings refuse inf/nan and what this machine or the AWS account cannot hold: local
instances x workers x torch_threads against the cores, Lambda concurrency against the account's
limit and, in local mode, provisioned environments against the available memory."""

from __future__ import annotations

import pytest

from deployers.aws_lambda import deployer as lambda_module
from deployers.aws_lambda.deployer import LambdaDeployer
from deployers.aws_lambda.settings import MAX_FUNCTION_CONCURRENCY, LambdaSettings
from deployers.base import SettingsError
from deployers.local.deployer import LocalDeployer
from deployers.local.settings import LocalSettings, check_fits, with_workers
from deployers.sagemaker.settings import SageMakerSettings
from deployers.standins import shaping
from deployers.standins.lambda_shape import ACCOUNT_CONCURRENCY, UNRESERVED_MINIMUM, check_environments_fit


def test_local_threads_above_the_cores_are_refused_naming_the_numbers():
    s = with_workers(LocalSettings.parse({"instances": 2, "workers": 2, "torch_threads": 1}), 2)
    with pytest.raises(SettingsError) as info:
        check_fits(s, 2)
    text = str(info.value)
    assert "instances=2 x workers=2 x torch_threads=1 = 4 threads" in text
    assert "has 2 cores" in text and "<= 2" in text


def test_local_default_workers_fit_the_cores_and_instances_above_them_are_refused():
    assert check_fits(with_workers(LocalSettings.parse({"instances": 2}), 2), 2)
    with pytest.raises(SettingsError, match="instances=3 x workers=1 x torch_threads=1"):
        check_fits(with_workers(LocalSettings.parse({"instances": 3}), 2), 2)


def test_local_cpu_quota_above_the_cores_is_still_refused():
    with pytest.raises(SettingsError, match=r"instances=2 x cpus=1\.5"):
        check_fits(with_workers(LocalSettings.parse({"instances": 2, "cpus": 1.5}), 2), 2)


def test_the_local_deployer_checks_against_this_machines_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(shaping, "machine_cores", lambda: 4)
    deployer = LocalDeployer(state_dir=tmp_path)
    assert deployer.parse_settings({"workers": 2, "torch_threads": 2}).workers == 2
    with pytest.raises(SettingsError, match="= 8 threads and this machine has 4 cores"):
        deployer.parse_settings({"workers": 4, "torch_threads": 2})


@pytest.mark.parametrize("raw", [{"cpus": float("inf")}, {"cpus": float("nan")},
                                 {"startup_timeout_s": float("inf")},
                                 {"request_timeout_s": float("nan")}])
def test_local_settings_refuse_inf_and_nan(raw):
    with pytest.raises(SettingsError, match=next(iter(raw))):
        LocalSettings.parse(raw)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_sagemaker_settings_refuse_inf_and_nan(value):
    with pytest.raises(SettingsError, match="wait_timeout_s"):
        SageMakerSettings.parse({"wait_timeout_s": value})


@pytest.mark.parametrize("field", ["reserved_concurrency", "provisioned_concurrency"])
def test_lambda_concurrency_above_the_accounts_limit_is_refused_saying_why(field):
    assert MAX_FUNCTION_CONCURRENCY == ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM == 900
    LambdaSettings.parse({field: MAX_FUNCTION_CONCURRENCY})
    with pytest.raises(SettingsError) as info:
        LambdaSettings.parse({field: MAX_FUNCTION_CONCURRENCY + 1})
    text = str(info.value)
    assert field in text and "above the limit of 900" in text and "1,000" in text


def test_environments_that_do_not_fit_the_memory_are_refused_naming_the_numbers():
    check_environments_fit(4, 1024, 4096)
    with pytest.raises(ValueError) as info:
        check_environments_fit(5, 1024, 4096)
    assert "5 environments x memory_mb=1024 = 5,120 MB" in str(info.value)
    assert "4,096 MB available" in str(info.value) and "at most 4 of 1024 MB" in str(info.value)


def test_the_lambda_deployer_checks_provisioned_environments_in_local_mode(monkeypatch):
    monkeypatch.setattr(lambda_module, "mem_available_mb", lambda: 8192)
    deployer = LambdaDeployer()
    local = {"memory_mb": 2048, "local_runtime": True}
    assert deployer.parse_settings({**local, "provisioned_concurrency": 4})
    with pytest.raises(SettingsError, match="provisioned_concurrency=5: 5 environments"):
        deployer.parse_settings({**local, "provisioned_concurrency": 5})
    # against AWS the account's limit applies, not this machine's memory
    assert deployer.parse_settings({**local, "local_runtime": False,
                                    "provisioned_concurrency": 5})


def test_the_lambda_deployer_checks_reserved_environments_in_local_mode(monkeypatch):
    monkeypatch.setattr(lambda_module, "mem_available_mb", lambda: 8192)
    deployer = LambdaDeployer()
    local = {"memory_mb": 2048, "local_runtime": True}
    assert deployer.parse_settings({**local, "reserved_concurrency": 4,
                                    "provisioned_concurrency": 1})
    with pytest.raises(SettingsError, match="reserved_concurrency=10: 10 environments"):
        deployer.parse_settings({**local, "reserved_concurrency": 10,
                                 "provisioned_concurrency": 2})
