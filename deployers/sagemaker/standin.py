"""How the local SageMaker stand-in shapes an endpoint, and when it refuses one.

Promises:

- ``is_local(s)`` says whether the stand-in serves a deployment, without any AWS call.
- ``check_fits(s)`` refuses (``SettingsError``) a locally served endpoint whose instances
  together have more vCPUs (instance_count x the type's vCPUs) than the cores this process may
  use (``os.sched_getaffinity``): a shape is never run smaller than asked, and instances do not
  share cores. Against AWS, and for serverless variants, nothing is refused.
- ``server_shape(variant)``: each instance is one scoring server shaped like the instance type
  (``instances.json``: vCPUs as CPU quota and as visible cores, its memory); a serverless variant
  is one server limited to its memory only. SageMaker gives serverless endpoints CPU in
  proportion to their memory but documents no ratio, so no CPU quota is guessed.
- ``served_details(name)``: what ``describe`` adds for an endpoint this process serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployers import aws, standins
from deployers.base import SettingsError
from deployers.sagemaker.instances import fitting, instance_shape
from deployers.sagemaker.settings import SageMakerSettings
from deployers.standins.shaping import Shape, machine_cores


def is_local(s: SageMakerSettings) -> bool:
    """``s.local``, else whether the SageMaker control plane is on this machine."""
    return s.local if s.local is not None else aws.endpoint_is_local("sagemaker")


def check_fits(s: SageMakerSettings) -> SageMakerSettings:
    """``s``, unless the stand-in would serve an instance larger than this machine (see the
    module docstring); the message says how to price it or what fits instead."""
    if s.serverless is not None or not is_local(s):
        return s
    vcpus, cores = instance_shape(s.instance_type).vcpus, machine_cores()
    need = vcpus * s.instance_count
    if need > cores:
        fits = ", ".join(fitting(cores)) or f"none: no type in the table has <= {cores}"
        shape = (f"instance_type={s.instance_type!r}" if s.instance_count == 1 else
                 f"instance_count={s.instance_count} x instance_type={s.instance_type!r}")
        raise SettingsError(
            f"{shape}: the shape needs {need} vCPUs and this machine has {cores} cores (those"
            " this process may use); the local SageMaker stand-in never runs an endpoint"
            " smaller than asked, nor lets its instances share cores. Price it with the"
            " prediction from measured smaller shapes (`niser-mlops predict`), pick one"
            f" instance of at most {cores} vCPUs ({fits}), or deploy against AWS"
            " (local=false).")
    return s



def server_shape(variant: Mapping[str, Any]) -> tuple[Shape, int]:
    """The shape of each stand-in server of a production variant (as ``CreateEndpointConfig``
    takes or ``DescribeEndpointConfig`` returns it), and how many servers."""
    if "ServerlessConfig" in variant:
        return Shape(memory_mb=int(variant["ServerlessConfig"]["MemorySizeInMB"])), 1
    inst = instance_shape(variant["InstanceType"])
    return (Shape(cpus=inst.vcpus, cores=inst.vcpus, memory_mb=inst.memory_mb),
            int(variant["InitialInstanceCount"]))


def served_details(name: str) -> dict[str, Any]:
    """How this process serves ``name``: ``shaping`` (``none``, ``cgroup-v1``, ``cgroup-v2``),
    each server's ``cpus`` quota and ``memory_mb`` limit (``None``: not limited), ``servers``
    and their ``cgroups``; empty when this process does not serve it."""
    serving = standins.current().running_sagemaker()
    try:
        served = serving.served(name) if serving is not None else None
    except KeyError:
        return {}
    if served is None:
        return {}
    shape = served.shape if served.shaping != "none" else None
    return {"shaping": served.shaping, "cpus": shape.cpus if shape else None,
            "memory_mb": shape.memory_mb if shape else None, "servers": len(served.servers),
            "cgroups": [g.name for g in served.groups]}
