"""Local settings: workers and torch threads sized to the instance's CPUs; the server's environment."""

from __future__ import annotations

import pytest

from deployers.local import deployer as local_module
from deployers.local.settings import LocalSettings, cpu_budget, sizes, with_workers


@pytest.mark.parametrize(("raw", "cores", "expected"), [
    ({}, 2, (2, 1)),  # unshaped: a worker per core, one thread each
    ({}, 8, (8, 1)),
    ({"instances": 2}, 2, (1, 1)),  # two instances share the cores
    ({"instances": 3}, 2, (1, 1)),  # never fewer than one
    ({"cpus": 0.5}, 2, (1, 1)),
    ({"cpus": 2.5}, 4, (2, 1)),  # whole CPUs of the quota
    ({"workers": 1}, 4, (1, 4)),  # threads fill what the given workers leave
    ({"torch_threads": 2}, 4, (2, 2)),  # workers fill what the given threads leave
    ({"workers": 3, "torch_threads": 3}, 2, (3, 3)),  # both given: kept, even beyond the cores
])
def test_workers_and_threads_default_to_the_instances_cpus(raw, cores, expected):
    s = with_workers(LocalSettings.parse(raw), cores)
    assert sizes(s) == expected
    if "workers" not in raw or "torch_threads" not in raw:
        assert expected[0] * expected[1] <= max(cpu_budget(s, cores), expected[0])


def test_sizes_refuse_settings_not_filled_in():
    with pytest.raises(ValueError, match="with_workers"):
        sizes(LocalSettings.parse({}))


def test_server_env_carries_the_environment_setting(tracking_uri):
    plain = with_workers(LocalSettings.parse({}), 2)
    env = local_module.server_env(plain)
    assert "NISER_BATCHING" not in env and env["OMP_NUM_THREADS"] == "1"
    off = with_workers(LocalSettings.parse({"environment": {"NISER_BATCHING": "0"}}), 2)
    assert local_module.server_env(off)["NISER_BATCHING"] == "0"


@pytest.mark.parametrize(("bad", "named"), [
    ({"environment": {"1BAD": "x"}}, "1BAD"), ({"environment": {"A B": "x"}}, "A B"),
    ({"environment": {"AWS_SECRET_ACCESS_KEY": "x"}}, "looks like a credential"),
    ({"environment": {"DB_PASSWORD": "x"}}, "looks like a credential"),
    ({"environment": {"X": 3}}, "environment")])
def test_bad_environment_settings_name_the_key(bad, named):
    from deployers.base import SettingsError

    with pytest.raises(SettingsError, match=named):
        LocalSettings.parse(bad)


def test_environment_may_come_as_json_text_as_mlflows_cli_passes_it():
    from deployers.base import SettingsError

    s = LocalSettings.parse({"environment": '{"NISER_BATCHING": "0"}'})
    assert s.environment == {"NISER_BATCHING": "0"}
    with pytest.raises(SettingsError, match="not a JSON object"):
        LocalSettings.parse({"environment": "NISER_BATCHING=0"})
