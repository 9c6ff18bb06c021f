"""One contract suite over every registered deployer: registering a deployer puts it under test.

The deployers are parametrized from ``deployers.registry.available()``. Each runs in its own
environment, set up by ``ENVIRONMENTS[name]`` (a moto server for the AWS ones); a deployer with
no entry there runs with no set-up and empty settings, so a new plug-in is tested as it comes.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import mlflow
import pandas as pd
import pytest

from deployers import aws, base
from deployers.base import (
    CostKind,
    Deployer,
    DeployerError,
    DeploymentFailed,
    SettingsError,
    UnknownDeployerError,
)
from deployers.registry import available, get_deployer

REPO = Path(__file__).resolve().parents[2]
# Raw ids of the tiny registered model (tests/conftest.py: 100000 + 7 * j); the last is unknown.
SESSIONS = [[100_000, 100_007, 100_014], [100_021], [100_035, 100_000, 100_049], [123]]
K = 5


def _no_setup(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {}


def _local(request: pytest.FixtureRequest) -> dict[str, Any]:
    monkeypatch = request.getfixturevalue("monkeypatch")
    tmp_path = request.getfixturevalue("tmp_path")
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(tmp_path / "local-state"))
    return {"workers": 1, "torch_threads": 1}


def _moto(request: pytest.FixtureRequest) -> str:
    """The moto server's URL, its account emptied (as conftest does for tests naming it)."""
    try:
        url = str(request.getfixturevalue("moto_server"))
    except pytest.FixtureLookupError:
        pytest.skip("needs the moto_server fixture of tests/deployers/conftest.py (absent)")
    reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(reset, timeout=30).close()
    return url


def _sagemaker(request: pytest.FixtureRequest) -> dict[str, Any]:
    _moto(request)
    aws.client("ecr").create_repository(repositoryName="mlflow-pyfunc")
    return {"local": True}


def _lambda(request: pytest.FixtureRequest) -> dict[str, Any]:
    _moto(request)
    return {}


# deployer name -> set-up returning the settings its contract test deploys with
ENVIRONMENTS: dict[str, Callable[[pytest.FixtureRequest], dict[str, Any]]] = {
    "inprocess": _no_setup,
    "local": _local,
    "sagemaker": _sagemaker,
    "lambda": _lambda,
}


# Deploying anything but the in-process model starts servers: seconds each, so marked slow.
PARAMS = [pytest.param(name, marks=() if name == "inprocess" else pytest.mark.slow)
          for name in available()]


@pytest.fixture(params=PARAMS)
def target(request: pytest.FixtureRequest) -> tuple[Deployer, dict[str, Any]]:
    """A registered deployer in its environment, and the settings to deploy it with."""
    settings = ENVIRONMENTS.get(request.param, _no_setup)(request)
    return get_deployer(request.param), settings


@pytest.fixture(scope="module")
def expected(registered_model_uri: str) -> list[list[int]]:
    """What the registered model answers in this process for ``SESSIONS``, k = ``K``."""
    rows = mlflow.pyfunc.load_model(registered_model_uri).predict(
        pd.DataFrame({"session": SESSIONS}), params={"k": K})
    return [[int(i) for i in items] for items in pd.DataFrame(rows)["items"]]


def test_unknown_settings_key_is_refused_before_anything_is_created(
        target: tuple[Deployer, dict[str, Any]], registered_model_uri: str) -> None:
    deployer, settings = target
    before = deployer.list()
    with pytest.raises(SettingsError) as info:
        deployer.deploy(registered_model_uri, {**settings, "no_such_key": 1})
    message = str(info.value)
    assert "no_such_key" in message and "valid keys" in message
    for field in deployer.settings_cls.model_fields:
        assert field in message, f"{field!r} missing from the list of valid keys: {message}"
    assert deployer.list() == before


def test_deploy_invoke_describe_teardown(
        target: tuple[Deployer, dict[str, Any]], registered_model_uri: str,
        expected: list[list[int]]) -> None:
    deployer, settings = target
    endpoint = deployer.deploy(registered_model_uri, settings)
    try:
        assert endpoint.target == deployer.name and endpoint.model_uri == registered_model_uri
        assert endpoint.name in deployer.list()

        answer = endpoint.invoke(SESSIONS, k=K)
        assert answer.items == expected
        for items, scores in zip(answer.items, answer.scores, strict=True):
            assert len(items) == K == len(set(items)) == len(scores)
            assert all(isinstance(i, int) for i in items)
            assert scores == sorted(scores, reverse=True)
        assert deployer.invoker(endpoint.name)(SESSIONS[:1], k=K).items == expected[:1]

        desc = deployer.describe(endpoint.name)
        assert (desc.target, desc.name) == (deployer.name, endpoint.name)
        assert desc.cost.kind in get_args(CostKind)
        params = desc.as_params()
        assert all(isinstance(v, str) for v in params.values())
        assert not any(re.search(r"secret|password|token", k + v, re.I)
                       for k, v in params.items())
    finally:
        deployer.teardown(endpoint.name)
    assert endpoint.name not in deployer.list()
    deployer.teardown(endpoint.name)  # idempotent
    with pytest.raises(KeyError):
        deployer.describe(endpoint.name)
    with pytest.raises(KeyError):
        deployer.invoker(endpoint.name)


class _Boom(Exception):
    pass


def test_deployed_tears_down_when_the_body_raises(
        target: tuple[Deployer, dict[str, Any]], registered_model_uri: str) -> None:
    deployer, settings = target
    names = []
    with pytest.raises(_Boom), deployer.deployed(registered_model_uri, settings) as endpoint:
        names.append(endpoint.name)
        assert endpoint.name in deployer.list()
        raise _Boom
    assert names and names[0] not in deployer.list()
    with pytest.raises(KeyError):
        deployer.describe(names[0])


def _aws_leftovers() -> dict[str, list[str]]:
    """What exists in the moto account, by kind (nothing when no moto server is in use)."""
    if not aws.endpoint_is_local("sts"):
        return {}
    s3, sm, iam = aws.client("s3"), aws.client("sagemaker"), aws.client("iam")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return {
        "functions": [f["FunctionName"] for f in aws.client("lambda").list_functions()[
            "Functions"]],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"]],
        "objects": [f"{b}/{o['Key']}" for b in buckets
                    for o in s3.list_objects_v2(Bucket=b).get("Contents", [])],
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()[
            "EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
    }


class _Injected(Exception):
    pass


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, nth: int, error: type[BaseException]
                  ) -> list[str]:
    """Make the ``nth`` resource a deploy registers for cleanup raise ``error`` right after it
    is registered: a failure (or Ctrl-C) in the middle of the deploy. Returns what was pushed."""
    pushed: list[str] = []
    real_push = base.Undo.push

    def push(self: base.Undo, what: str, action: Callable[[], Any]) -> None:
        real_push(self, what, action)
        pushed.append(what)
        if len(pushed) == nth:
            raise error(f"injected after {what}")

    monkeypatch.setattr(base.Undo, "push", push)
    return pushed


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("error", [_Injected, KeyboardInterrupt])
def test_interrupted_deploy_leaves_nothing_behind(
        target: tuple[Deployer, dict[str, Any]], registered_model_uri: str,
        nth: int, error: type[BaseException]) -> None:
    """A failure midway becomes DeploymentFailed, Ctrl-C stays Ctrl-C; either way list(),
    describe() and (for the AWS targets) moto's list calls show nothing left."""
    deployer, settings = target
    before, aws_before = deployer.list(), _aws_leftovers()
    expected = DeploymentFailed if error is _Injected else KeyboardInterrupt
    # Only the injection is undone afterwards: the target's own set-up (its state directory)
    # stays in force for the checks below.
    with pytest.MonkeyPatch.context() as injection:
        pushed = _interrupt_at(injection, nth, error)
        try:
            with pytest.raises(expected) as info:
                deployer.deploy(registered_model_uri, settings, "niser-contract-midway")
        except pytest.fail.Exception:
            injection.undo()
            if len(pushed) < nth:  # deployed without reaching the injection point
                deployer.teardown("niser-contract-midway")
                pytest.skip(f"{deployer.name} registers {len(pushed)} resource(s) for cleanup")
            raise
    if error is _Injected:
        assert isinstance(info.value.__cause__, _Injected)
        assert "cleanup problems" not in str(info.value), str(info.value)
    assert deployer.list() == before
    with pytest.raises(KeyError):
        deployer.describe("niser-contract-midway")
    assert _aws_leftovers() == aws_before


def test_deployment_names_follow_one_rule_for_every_target() -> None:
    with pytest.raises(SettingsError, match="deployment name is"):
        base.check_name("")
    for name in ("../../victim", "UPPER", "a_b", "-lead", "trail-", "double--dash", "x" * 64):
        for deployer_name in available():
            with pytest.raises(SettingsError, match="deployment name is"):
                base.check_name(name)
            with pytest.raises(SettingsError, match="deployment name is"):
                get_deployer(deployer_name).deploy("models:/unused/1", None, name)
    assert base.check_name("niser-local-1x2") == "niser-local-1x2"



PATH_LIKE = ("../x", "../../victim", "../..", "..", ".", "a/b", "/etc", "x/../y", "%2e%2e",
             "~", "x\\y", "niser/../../victim")


@pytest.mark.parametrize("deployer_name", available())
def test_a_path_like_name_is_refused_by_every_method_and_touches_nothing(
        deployer_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    victim = home / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    for var in ("NISER_LOCAL_STATE_DIR", "NISER_LAMBDA_STATE_DIR"):
        monkeypatch.setenv(var, str(home / "state" / "deeper"))
    monkeypatch.setenv("HOME", str(home))
    deployer = get_deployer(deployer_name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for name in PATH_LIKE:
        for method in base.NAMED_METHODS:
            if not hasattr(deployer, method):
                continue
            args = ("models:/unused/1",) if method == "update" else ()
            with pytest.raises(SettingsError, match="deployment name is"):
                getattr(deployer, method)(name, *args)
        with pytest.raises(SettingsError, match="deployment name is"):
            deployer.deploy("models:/unused/1", None, name)
    assert (victim / "keep.txt").read_text() == "mine"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

def test_every_deployer_error_shares_one_root() -> None:
    for cls in (SettingsError, UnknownDeployerError, DeploymentFailed, base.InvocationError):
        assert issubclass(cls, DeployerError)
    assert issubclass(SettingsError, ValueError) and issubclass(UnknownDeployerError, KeyError)


def test_unknown_deployer_name_is_answered_with_the_valid_ones() -> None:
    with pytest.raises(UnknownDeployerError) as info:
        get_deployer("no-such-deployer")
    message = str(info.value)
    assert "no-such-deployer" in message
    for name in available():
        assert name in message


def test_builtin_deployers_are_registered() -> None:
    assert {"inprocess", "local", "sagemaker", "lambda"} <= set(available())


def test_readme_mentions_every_registered_deployer() -> None:
    path = REPO / "README.md"
    assert path.is_file(), f"{path} is missing: it must describe every registered deployer"
    readme = path.read_text()
    missing = [name for name in available() if f"`{name}`" not in readme]
    assert missing == [], f"README.md does not mention these deployers as `name`: {missing}"
