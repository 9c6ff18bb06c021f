"""Helpers shared by the Lambda tests: a deployer on a private state folder, packages and toy
handlers."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployers import standins
from deployers.aws_lambda import LambdaDeployer
from deployers.aws_lambda.package import Package, build_package
from deployers.base import DeployerError


@pytest.fixture
def deployer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaDeployer]:
    """A Lambda deployer whose state lives in ``tmp_path``; the process's stand-in is closed
    after the test. Import it into a test module to use it."""
    monkeypatch.setenv("NISER_LAMBDA_STATE_DIR", str(tmp_path / "state"))
    yield LambdaDeployer()
    standins.current().close()

def build_or_skip(recommender: object, out: Path, architecture: str = "x86_64") -> Package:
    """Build the package of ``recommender``'s function code; skip when the wheels can be neither
    found in the cache nor downloaded."""
    from niser.lambda_bundle import write_bundle

    code = write_bundle(recommender, out / "code")  # type: ignore[arg-type]
    try:
        return build_package(code, out, "python3.11", architecture)
    except DeployerError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"the Lambda wheels are not cached and PyPI is unreachable: {exc}")
        raise


def toy_package(root: Path, body: str) -> Path:
    """A package directory whose ``lambda_handler.py`` is ``body`` (for runtime behaviour)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lambda_handler.py").write_text(textwrap.dedent(body))
    return root
