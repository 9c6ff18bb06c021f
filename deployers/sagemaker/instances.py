"""The shapes of SageMaker instance types, kept as data (``instances.json``, with ``as_of`` and
``source``).

Promises:

- ``instance_shape(instance_type)`` returns the ``InstanceShape`` of a type in the table (vCPUs,
  physical cores x threads per core, memory, GPUs); an unknown type raises ``KeyError`` listing
  the known ones.
- The table is read and checked once per process: every row has positive vCPUs equal to
  cores x threads per core, a positive memory and no negative GPU count, else ``ValueError``
  names the row. Every type ``settings.InstanceType`` accepts has a row (a test checks it).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).with_name("instances.json")


@dataclass(frozen=True)
class InstanceShape:
    """What one instance of a type gives a model server."""

    instance_type: str  # e.g. "ml.c5.large"
    vcpus: int  # hardware threads: cores * threads_per_core
    cores: int  # physical cores
    threads_per_core: int
    memory_gib: int
    gpus: int = 0
    gpu_model: str | None = None  # e.g. "NVIDIA T4"; None without GPUs

    @property
    def memory_mb(self) -> int:
        """The instance's memory in MiB (1 GiB = 1024 MiB), as a cgroup limit takes it."""
        return self.memory_gib * 1024


@dataclass(frozen=True)
class InstanceTable:
    """The whole table: its rows by type, and where and when they were read."""

    as_of: str
    source: str
    shapes: dict[str, InstanceShape]


def _row(instance_type: str, raw: dict[str, Any]) -> InstanceShape:
    shape = InstanceShape(instance_type, int(raw["vcpus"]), int(raw["cores"]),
                          int(raw["threads_per_core"]), int(raw["memory_gib"]),
                          int(raw.get("gpus", 0)), raw.get("gpu_model"))
    if shape.vcpus < 1 or shape.vcpus != shape.cores * shape.threads_per_core:
        raise ValueError(f"{TABLE_PATH.name}: {instance_type}: vcpus={shape.vcpus} must be >= 1"
                         f" and equal cores x threads_per_core = {shape.cores} x "
                         f"{shape.threads_per_core}")
    if shape.memory_gib < 1 or shape.gpus < 0:
        raise ValueError(f"{TABLE_PATH.name}: {instance_type}: memory_gib={shape.memory_gib} "
                         f"must be >= 1 and gpus={shape.gpus} >= 0")
    return shape


def load(path: Path = TABLE_PATH) -> InstanceTable:
    """Read and check the table at ``path`` (see the module docstring)."""
    raw = json.loads(path.read_text())
    rows = {name: _row(name, row) for name, row in raw["instances"].items()}
    return InstanceTable(str(raw["as_of"]), str(raw["source"]), rows)


@functools.cache
def table() -> InstanceTable:
    """The packaged table, read once."""
    return load()


def instance_shape(instance_type: str) -> InstanceShape:
    """The shape of ``instance_type``; ``KeyError`` naming the known types when absent."""
    try:
        return table().shapes[instance_type]
    except KeyError:
        known = ", ".join(sorted(table().shapes))
        raise KeyError(f"no instance type {instance_type!r} in {TABLE_PATH.name}; known: "
                       f"{known}") from None


def fitting(cores: int) -> list[str]:
    """Instance types whose vCPUs are at most ``cores``, fewest vCPUs first."""
    rows = sorted(table().shapes.values(), key=lambda s: (s.vcpus, s.memory_gib,
                                                            s.instance_type))
    return [s.instance_type for s in rows if s.vcpus <= cores]
