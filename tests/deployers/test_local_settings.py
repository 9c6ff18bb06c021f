"""Local settings: workers and torch threads sized to the instance's CPUs, batching to the env."""

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


def test_server_env_carries_the_batching_settings_only_when_given(tracking_uri):
    plain = with_workers(LocalSettings.parse({}), 2)
    env = local_module.server_env(plain)
    assert "NISER_BATCHING" not in env and "NISER_MAX_BATCH_SESSIONS" not in env
    assert env["OMP_NUM_THREADS"] == "1"
    off = with_workers(LocalSettings.parse({"batching": False, "max_batch_sessions": 8}), 2)
    env = local_module.server_env(off)
    assert (env["NISER_BATCHING"], env["NISER_MAX_BATCH_SESSIONS"]) == ("0", "8")


@pytest.mark.parametrize("bad", [{"max_batch_sessions": 0}, {"batching": "sometimes"}])
def test_bad_batching_settings_name_the_field(bad):
    from deployers.base import SettingsError

    with pytest.raises(SettingsError, match=next(iter(bad))):
        LocalSettings.parse(bad)
