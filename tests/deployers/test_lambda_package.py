"""The Lambda zip package: a model's function code plus wheels, within Lambda's limit, alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deployers.aws_lambda.package import MAX_UNZIPPED_BYTES, function_code
from deployers.aws_lambda.wheels import pins_for
from deployers.base import DeployerError
from tests.deployers.lambda_support import build_or_skip


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_package_fits_lambda_and_holds_no_torch(tiny_recommender, tmp_path, architecture):
    package = build_or_skip(tiny_recommender, tmp_path, architecture)
    print(f"\n{architecture}: {package.unzipped_bytes / 2**20:.1f} MiB unzipped, "
          f"{package.zipped_bytes / 2**20:.1f} MiB zipped")
    assert package.unzipped_bytes <= MAX_UNZIPPED_BYTES
    names = {p.name for p in package.root.iterdir()}
    assert {"lambda_handler.py", "niser", "model", "numpy", "onnxruntime"} <= names
    assert "torch" not in names
    assert not list(package.root.rglob("__pycache__")) and not list(package.root.rglob("tests"))
    machine = "aarch64" if architecture == "arm64" else "x86_64"
    assert list(package.root.glob("numpy.libs/*")) or list(package.root.rglob(f"*{machine}*.so"))
    assert all(machine in p.name for p in package.root.glob("numpy/core/_multiarray_umath*.so"))


def test_package_runs_in_an_interpreter_that_sees_only_it(tiny_recommender, tmp_path):
    """python -S with the package alone on sys.path: no venv package (torch, mlflow) leaks in."""
    package = build_or_skip(tiny_recommender, tmp_path)
    raw = tiny_recommender.vocab.raw_ids[:3].tolist()
    script = ("import json, sys, lambda_handler as h\n"
              f"out = h.handler({{'dataframe_records': [{{'session': {raw}}}]}}, None)\n"
              "assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
              "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-S", "-c", script], cwd=package.root,
                          env={"PYTHONPATH": str(package.root)}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)["predictions"][0]
    assert got["items"] == tiny_recommender.recommend([raw], 20)[0].items




def test_requirements_are_met_by_the_runtime_pins() -> None:
    assert pins_for(["numpy>=1.26", "onnxruntime>=1.16", "# comment", ""], "python3.11") == [
        "numpy==1.26.4", "onnxruntime==1.16.3"]


@pytest.mark.parametrize(("line", "fragment"), [
    ("onnxruntime>=1.20", "has onnxruntime==1.16.3"),
    ("torch", "carries only"),
    ("numpy>>1", "is not a requirement"),
])
def test_requirements_the_runtime_cannot_meet_are_refused(line: str, fragment: str) -> None:
    with pytest.raises(DeployerError) as err:
        pins_for([line], "python3.11")
    assert fragment in str(err.value)


def test_registered_model_carries_its_function_code(registered_model_uri, tmp_path):
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=registered_model_uri,
                                                dst_path=str(tmp_path))
    code = function_code(Path(local))
    names = {p.name for p in code.iterdir()}
    assert {"lambda_handler.py", "niser", "model", "requirements.txt"} <= names
    assert {p.name for p in (code / "model").iterdir()} >= {"model.onnx", "vocab.json",
                                                            "popularity.npy", "meta.json"}


def test_a_directory_without_function_code_is_refused(tmp_path):
    with pytest.raises(DeployerError) as err:
        function_code(tmp_path)
    assert "log_recommender" in str(err.value)
