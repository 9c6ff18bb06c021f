"""The Lambda zip package: the model exported to ONNX, a numpy handler and manylinux wheels.

torch is 754 MB installed, three times Lambda's 250 MB unzipped limit, so the zip carries the
model as ONNX run by onnxruntime. ``build_package`` writes::

    lambda_handler.py   deployers/lambda_handler.py (handler ``lambda_handler.handler``)
    niser/              __init__.py, graph.py, vocab.py, contract.py vendored unchanged: they
                        need numpy and the standard library only
    model/              model.onnx, vocab.json, popularity.npy, meta.json
    numpy/ onnxruntime/ the unzipped manylinux wheels of the target runtime and architecture

The ONNX graph takes the session-graph arrays of ``niser.graph.build_batch`` and ``k`` and
returns the top-k item indices (1..N, padding never among them) and their scores. The
L2-normalised item table is a constant of the graph (normalised once at export, never per
call); TopK runs inside the graph, ``k`` is an input (the request's ``params.k``, 1..1000).

Runtimes and wheels (``RUNTIMES``): Lambda ``python3.11`` runs on Amazon Linux 2 (glibc 2.26),
so it needs ``manylinux2014`` wheels; the newest onnxruntime built that way is 1.16.3, which
was compiled against numpy 1.x, hence numpy 1.26.4, opset 17 and IR version 8.
``python3.12`` runs on Amazon Linux 2023 (glibc 2.34) and takes ``manylinux_2_28`` wheels.
Wheels come from PyPI through ``pip download --only-binary=:all:`` and are cached under
``NISER_WHEEL_CACHE`` (default ``~/.cache/niser-mlops/wheels``). Only numpy and onnxruntime
go in: onnxruntime's declared dependencies (protobuf, flatbuffers, packaging, ...) serve its
tools, not ``InferenceSession``; the local runtime runs the package in an interpreter that sees
nothing else, which proves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from niser.contract import MAX_K

if TYPE_CHECKING:  # importing this module must not import torch
    from niser.inference import Recommender

Architecture = Literal["x86_64", "arm64"]
Runtime = Literal["python3.11", "python3.12"]

# Lambda's limit on the unzipped function code (zip plus layers).
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
VENDORED = ("__init__.py", "graph.py", "vocab.py", "contract.py")
INPUTS = ("nodes", "adj", "alias", "positions", "mask", "last", "k")


@dataclass(frozen=True)
class RuntimeWheels:
    """What ``pip download`` asks for one Lambda runtime."""

    python_version: str
    platform: str  # with ``{machine}``: x86_64 or aarch64
    pins: tuple[str, ...]


RUNTIMES: dict[str, RuntimeWheels] = {
    "python3.11": RuntimeWheels("3.11", "manylinux2014_{machine}",
                                ("numpy==1.26.4", "onnxruntime==1.16.3")),
    "python3.12": RuntimeWheels("3.12", "manylinux_2_28_{machine}",
                                ("numpy==2.5.5", "onnxruntime==1.32.0")),
}
MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}


class PackageTooLarge(RuntimeError):
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


def export_onnx(recommender: Recommender, path: Path) -> None:
    """Write ``recommender``'s model as ONNX: session-graph arrays and ``k`` -> top-k."""
    import torch
    from torch import nn

    model = recommender.model.eval()
    config = recommender.config

    class TopK(nn.Module):
        table: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("table", model.item_table().detach().clone())  # (N + 1, d)

        def forward(self, nodes: torch.Tensor, adj: torch.Tensor, alias: torch.Tensor,
                    positions: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                    k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            table = self.table
            s = self.model.session_embedding(table, nodes, adj, alias, positions, mask, last)
            scores = torch.matmul(self.model.sigma * s, table[1:].t())  # (B, N): no padding
            # a tensor k is traced into the TopK node's K input: k stays a run-time input
            values, indices = torch.topk(scores, k, dim=1)  # type: ignore[arg-type]
            return indices + 1, values

    from niser.graph import build_batch

    sessions = [[1, 2, 1, 3], [2, 3]]
    flat = np.array([i % model.n_items + 1 for s in sessions for i in s], dtype=np.int64)
    g = build_batch(flat, np.array([0, 4, 6]), config.max_positions, config.long_sessions)
    args = (*g.tensors(), torch.tensor(min(2, model.n_items)))
    axes: dict[str, dict[int, str]] = {"nodes": {0: "B", 1: "n"}, "adj": {0: "B", 1: "n", 2: "n2"},
            "alias": {0: "B", 1: "L"}, "positions": {0: "B", 1: "L"}, "mask": {0: "B", 1: "L"},
            "last": {0: "B"}, "indices": {0: "B", 1: "k"}, "scores": {0: "B", 1: "k"}}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter writes opset 17 / IR 8, which onnxruntime 1.16 reads
        warnings.simplefilter("ignore")
        torch.onnx.export(TopK().eval(), args, str(path), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(INPUTS),
                          output_names=["indices", "scores"], dynamic_axes=axes)
    import onnx

    proto = onnx.load(str(path))
    if proto.ir_version > ONNX_IR_VERSION:
        proto.ir_version = ONNX_IR_VERSION
        onnx.save(proto, str(path))


def write_model_files(recommender: Recommender, directory: Path) -> None:
    """``model.onnx``, ``vocab.json``, ``popularity.npy`` and ``meta.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(recommender, directory / "model.onnx")
    recommender.vocab.save(directory / "vocab.json")
    np.save(directory / "popularity.npy", recommender.popularity)
    config = recommender.config
    meta = {"max_positions": config.max_positions, "long_sessions": config.long_sessions,
            "n_items": recommender.model.n_items, "max_k": MAX_K,
            "onnx_opset": ONNX_OPSET}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))


def wheel_cache() -> Path:
    """Where downloaded wheels are kept between builds."""
    env = os.environ.get("NISER_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "niser-mlops" / "wheels"


def fetch_wheels(runtime: str, architecture: str) -> list[Path]:
    """The pinned wheels of ``runtime`` for ``architecture``, downloaded once into the cache."""
    spec = RUNTIMES[runtime]
    platform = spec.platform.format(machine=MACHINE[architecture])
    dest = wheel_cache() / f"{runtime}-{architecture}"
    wheels = [_cached(dest, pin) for pin in spec.pins]
    if all(wheels):
        return [w for w in wheels if w is not None]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", platform, "--python-version", spec.python_version,
           "--implementation", "cp", "--dest", str(dest), *spec.pins]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not download the {runtime}/{architecture} wheels "
                           f"({' '.join(spec.pins)}) from the package index:\n"
                           f"{done.stderr[-2000:]}\nCheck network access to PyPI, or put the "
                           f"wheels in {dest}.")
    found = [_cached(dest, pin) for pin in spec.pins]
    missing = [pin for pin, w in zip(spec.pins, found, strict=True) if w is None]
    if missing:
        raise RuntimeError(f"pip reported success but {missing} are not in {dest}")
    return [w for w in found if w is not None]


def _cached(dest: Path, pin: str) -> Path | None:
    name, version = pin.split("==")
    hits = sorted(dest.glob(f"{name}-{version}-*.whl")) if dest.is_dir() else []
    return hits[0] if hits else None


def tree_bytes(root: Path) -> int:
    """Total size of the regular files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _strip(root: Path) -> None:
    for pattern in ("__pycache__", "tests"):
        for d in sorted(root.rglob(pattern), reverse=True):
            if d.is_dir():
                shutil.rmtree(d)


def stage(recommender: Recommender | None, root: Path, runtime: str = "python3.11",
          architecture: str = "x86_64", model_files: Path | None = None) -> Path:
    """Lay out the unzipped package in ``root`` (emptied first); returns ``root``.

    ``model_files`` (a directory written by ``write_model_files``) is copied instead of
    exporting ``recommender`` again, so one export serves both architectures.
    """
    if runtime not in RUNTIMES or architecture not in MACHINE:
        raise ValueError(f"runtime={runtime!r}, architecture={architecture!r}: valid are "
                         f"{sorted(RUNTIMES)} and {sorted(MACHINE)}")
    if root.exists():
        shutil.rmtree(root)
    (root / "niser").mkdir(parents=True)
    here = Path(__file__).resolve().parent
    shutil.copy2(here / "lambda_handler.py", root / "lambda_handler.py")
    for name in VENDORED:
        shutil.copy2(here.parent / "niser" / name, root / "niser" / name)
    if model_files is not None:
        shutil.copytree(model_files, root / "model")
    elif recommender is not None:
        write_model_files(recommender, root / "model")
    else:
        raise ValueError("stage needs a recommender or a model_files directory")
    for wheel in fetch_wheels(runtime, architecture):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root)
    _strip(root)
    return root


def build_package(recommender: Recommender | None, out_dir: Path, runtime: str = "python3.11",
                  architecture: str = "x86_64", model_files: Path | None = None) -> Package:
    """Stage and zip the package; ``PackageTooLarge`` when unzipped it exceeds 250 MB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = stage(recommender, out_dir / f"package-{runtime}-{architecture}", runtime,
                 architecture, model_files)
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
