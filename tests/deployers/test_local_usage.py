"""``LocalDeployer.usage``: the CPU its instances' cgroups used, or None when unshaped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployers.local import LocalDeployer

SESSIONS = [[100_000, 100_007, 100_014], [100_021], [100_035, 100_000]]


@pytest.fixture
def deployer(tmp_path: Path) -> LocalDeployer:
    return LocalDeployer(state_dir=tmp_path / "state")


def _cgroup_v1_writable() -> bool:
    return os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu", os.W_OK) and Path(
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file()


def test_usage_of_an_absent_deployment_raises_key_error(deployer: LocalDeployer) -> None:
    with pytest.raises(KeyError, match="no-such"):
        deployer.usage("no-such")


@pytest.mark.slow
@pytest.mark.skipif(not _cgroup_v1_writable(), reason="needs root and a writable cgroup v1 tree")
def test_usage_sums_both_instances_groups_and_grows_with_invocations(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    with deployer.deployed(registered_model_uri, {"instances": 2, "cpus": 0.5}) as ep:
        before = deployer.usage(ep.name)
        assert before is not None
        assert (before.shaping, before.groups, before.live, before.quota_cpus) == (
            "cgroup-v1", 2, 2, 0.5)
        for _ in range(20):
            assert ep.invoke(SESSIONS, k=3).items
        after = deployer.usage(ep.name)
        assert after is not None
        assert after.used_cpu_s > before.used_cpu_s
        assert after.since(before).used_cpu_s == after.used_cpu_s - before.used_cpu_s
        assert after.periods >= before.periods


@pytest.mark.slow
def test_usage_is_none_when_the_deployment_is_unshaped(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    with deployer.deployed(registered_model_uri, {"workers": 1}) as ep:
        assert deployer.describe(ep.name).details["shaping"] == "none"
        assert deployer.usage(ep.name) is None
