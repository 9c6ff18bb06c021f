"""The Lambda deployer's view of its shaped stand-in: ``describe`` says how it is shaped,
``usage`` and ``capacity`` read it, and both are ``None`` against a real AWS endpoint."""

from __future__ import annotations

import pytest

from deployers import aws, standins
from deployers.standins.shaping import detect
from tests.deployers import lambda_support

deployer = lambda_support.deployer  # the shared fixture


@pytest.fixture(scope="module")
def model_dir(tiny_recommender, tmp_path_factory: pytest.TempPathFactory) -> str:
    from niser.lambda_bundle import write_bundle

    return str(write_bundle(tiny_recommender, tmp_path_factory.mktemp("function-code")))


@pytest.mark.skipif(detect() is None,
                    reason="needs root and a writable cgroup v1 or v2 tree at /sys/fs/cgroup")
def test_hosted_function_reports_its_shape_usage_and_capacity(deployer, moto_server, model_dir,
                                                              monkeypatch):
    endpoint = deployer.deploy(model_dir, {"memory_mb": 1769, "timeout_s": 20}, "niser-fn-sh")
    endpoint.invoke([[1, 2]], 5)
    details = deployer.describe("niser-fn-sh").details
    assert details["shaping"] == standins.current().aws_lambda().shaping != "none"
    assert details["cpu_share"] == 1.0
    usage = deployer.usage("niser-fn-sh")
    assert usage is not None and usage.used_cpu_s > 0 and usage.quota_cpus == pytest.approx(1.0)
    assert (usage.groups, usage.live) == (1, 1)
    capacity = deployer.capacity("niser-fn-sh")
    assert capacity is not None and capacity.concurrency >= 1
    monkeypatch.setattr(aws, "endpoint_is_local", lambda service: False)  # as against AWS
    assert deployer.usage("niser-fn-sh") is None and deployer.capacity("niser-fn-sh") is None
    monkeypatch.undo()
    deployer.teardown("niser-fn-sh")
    assert deployer.usage("niser-fn-sh") is None and deployer.capacity("niser-fn-sh") is None


def test_unhosted_function_has_no_usage_or_capacity(deployer):
    assert deployer.usage("niser-never-deployed") is None
    assert deployer.capacity("niser-never-deployed") is None
