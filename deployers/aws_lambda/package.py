"""The Lambda zip package: a model's function code (its ``lambda`` artifact) plus wheels.

A model logged by this project carries its Lambda function code as the MLflow artifact
``lambda`` (handler, vendored modules, model files, ``requirements.txt``). ``function_code``
finds that directory in a downloaded model; ``build_package`` copies it, adds the wheels its
``requirements.txt`` names for the runtime and architecture (``wheels``), and zips the result,
refusing a package over Lambda's 250 MB unzipped limit. Nothing here knows the model.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deployers.aws_lambda.wheels import MACHINE, RUNTIMES, fetch_wheels, pins_for
from deployers.base import DeployerError

# Lambda's limit on the unzipped function code (zip plus layers).
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
ARTIFACT = "lambda"
REQUIREMENTS = "requirements.txt"


class PackageTooLarge(DeployerError):
    """The unzipped package exceeds Lambda's 250 MB limit."""


@dataclass(frozen=True)
class Package:
    """A built package: its zip, its unzipped tree and their sizes."""

    zip_path: Path
    root: Path
    runtime: str
    architecture: str
    unzipped_bytes: int
    zipped_bytes: int


def function_code(model_dir: Path) -> Path:
    """The function-code directory inside a downloaded model (``artifacts/lambda``), or a
    directory that is function code itself; ``DeployerError`` when there is none."""
    artifact = model_dir / "artifacts" / ARTIFACT
    if (artifact / REQUIREMENTS).is_file():
        return artifact
    if not (model_dir / "MLmodel").exists() and (model_dir / REQUIREMENTS).is_file():
        return model_dir
    raise DeployerError(f"{model_dir} holds no Lambda function code (artifacts/{ARTIFACT} with "
                        f"{REQUIREMENTS}); log the model with niser.registry.log_recommender")


def model_code(model_uri: str, into: Path) -> Path:
    """The function code of ``model_uri`` (a model URI, downloaded into ``into``; a model
    directory; or function code itself)."""
    path = Path(model_uri)
    if not path.is_dir():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                        dst_path=str(into)))
    return function_code(path)


def tree_bytes(root: Path) -> int:
    """Total size of the regular files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _strip(root: Path) -> None:
    for pattern in ("__pycache__", "tests"):
        for d in sorted(root.rglob(pattern), reverse=True):
            if d.is_dir():
                shutil.rmtree(d)


def stage(code: Path, root: Path, runtime: str = "python3.11",
          architecture: str = "x86_64") -> Path:
    """Lay out the unzipped package in ``root`` (emptied first): ``code`` plus its wheels."""
    if runtime not in RUNTIMES or architecture not in MACHINE:
        raise ValueError(f"runtime={runtime!r}, architecture={architecture!r}: valid are "
                         f"{sorted(RUNTIMES)} and {sorted(MACHINE)}")
    pins = pins_for((code / REQUIREMENTS).read_text().splitlines(), runtime)
    wheels = fetch_wheels(runtime, architecture, pins)
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(code, root, ignore=shutil.ignore_patterns(REQUIREMENTS, "__pycache__"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root)
    _strip(root)
    return root


def build_package(code: Path, out_dir: Path, runtime: str = "python3.11",
                  architecture: str = "x86_64") -> Package:
    """Stage and zip the package; ``PackageTooLarge`` when unzipped it exceeds 250 MB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = stage(code, out_dir / f"package-{runtime}-{architecture}", runtime, architecture)
    size = tree_bytes(root)
    if size > MAX_UNZIPPED_BYTES:
        raise PackageTooLarge(
            f"the {runtime}/{architecture} package is {size / 2**20:.1f} MiB unzipped, over "
            f"Lambda's {MAX_UNZIPPED_BYTES / 2**20:.0f} MiB limit (see {root}); use "
            "mode='image' for a model this large")
    zip_path = out_dir / f"niser-lambda-{runtime}-{architecture}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return Package(zip_path, root, runtime, architecture, size, zip_path.stat().st_size)
