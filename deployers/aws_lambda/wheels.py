"""The wheels of a Lambda runtime: which builds run there, fetched once from the package index.

``RUNTIMES``: Lambda ``python3.11`` runs on Amazon Linux 2 (glibc 2.26), so it needs
``manylinux2014`` wheels; the newest onnxruntime built that way is 1.16.3, compiled against
numpy 1.x, hence numpy 1.26.4. ``python3.12`` runs on Amazon Linux 2023 (glibc 2.34) and takes
``manylinux_2_28`` wheels. ``pins_for`` checks a function's ``requirements.txt`` against the
runtime's pins: every requirement must name a pinned package whose version satisfies it.
Wheels come from PyPI through ``pip download --only-binary=:all:`` and are cached under
``NISER_WHEEL_CACHE`` (default ``~/.cache/niser-mlops/wheels``). Only the named packages go in:
onnxruntime's declared dependencies (protobuf, flatbuffers, ...) serve its tools, not
``InferenceSession``; the local Lambda stand-in runs the package in an interpreter that sees
nothing else, which proves it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

from deployers.base import DeployerError

Architecture = Literal["x86_64", "arm64"]
Runtime = Literal["python3.11", "python3.12"]
MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}


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


def pins_for(requirements: list[str], runtime: str) -> list[str]:
    """The runtime's pins for ``requirements`` (lines of a requirements.txt).

    ``DeployerError`` names a requirement the runtime has no build for, or whose version the
    runtime's pin does not satisfy.
    """
    pins = {p.split("==")[0].lower(): p for p in RUNTIMES[runtime].pins}
    chosen = []
    for line in requirements:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise DeployerError(f"requirements.txt line {line!r} is not a requirement: {exc}"
                                ) from None
        pin = pins.get(req.name.lower())
        if pin is None:
            raise DeployerError(f"the function needs {line!r}; the {runtime} package carries "
                                f"only {sorted(pins.values())}")
        if not req.specifier.contains(pin.split("==")[1], prereleases=True):
            raise DeployerError(f"the function needs {line!r}; the {runtime} package has {pin}")
        chosen.append(pin)
    return chosen


def wheel_cache() -> Path:
    """Where downloaded wheels are kept between builds."""
    env = os.environ.get("NISER_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "niser-mlops" / "wheels"


def _cached(dest: Path, pin: str) -> Path | None:
    name, version = pin.split("==")
    hits = sorted(dest.glob(f"{name}-{version}-*.whl")) if dest.is_dir() else []
    return hits[0] if hits else None


def fetch_wheels(runtime: str, architecture: str, pins: list[str]) -> list[Path]:
    """The wheels of ``pins`` for ``runtime`` and ``architecture``, downloaded once into the
    cache; ``DeployerError`` saying how to fix it when they cannot be had."""
    spec = RUNTIMES[runtime]
    platform = spec.platform.format(machine=MACHINE[architecture])
    dest = wheel_cache() / f"{runtime}-{architecture}"
    found = [_cached(dest, pin) for pin in pins]
    if not all(found):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", platform, "--python-version", spec.python_version,
               "--implementation", "cp", "--dest", str(dest), *pins]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DeployerError(f"could not download the {runtime}/{architecture} wheels "
                                f"({' '.join(pins)}) from the package index:\n"
                                f"{done.stderr[-2000:]}\nCheck network access to PyPI, or put "
                                f"the wheels in {dest}.")
        found = [_cached(dest, pin) for pin in pins]
    missing = [pin for pin, w in zip(pins, found, strict=True) if w is None]
    if missing:
        raise DeployerError(f"pip reported success but {missing} are not in {dest}")
    return [w for w in found if w is not None]
