"""What Lambda gives one execution environment, as a cgroup ``Shape``, and how many fit here.

Lambda's resources follow from the memory size alone (the facts this module encodes):

- CPU: "At 1,769 MB, a function has the equivalent of one vCPU (one vCPU-second of credits
  per second)" (AWS Lambda Developer Guide, "Configure Lambda function memory",
  docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html). The quota is
  ``memory_mb / 1769`` CPUs at every size (5.79 at the 10,240 MB maximum).
- Visible cores: not documented by AWS; measured from inside environments (py-cpuinfo across
  memory sizes, github.com/rwnx/lambda-cpuinfo): 2 cores up to 3,008 MB, 3 up to 5,307, 4 up
  to 7,076, 5 up to 8,845, 6 above (``CORE_STEPS``). Above 3,008 MB that is
  ``ceil(memory_mb / 1769)``, so an environment sees more cores than its quota keeps busy.
- Memory: the memory size is the environment's limit; past it the kernel kills the runtime
  and the invocation fails with ``Runtime.OutOfMemory``.

``lambda_shape`` is the one place these rules live; ``capacity`` says how many environments of a
size this machine holds at once at their full share. Both are pure;
``shaping.machine_cores`` and ``mem_available_mb`` read this machine for them.
"""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path

from deployers.base import Capacity
from deployers.standins.shaping import Shape

MB_PER_VCPU = 1769  # Lambda: 1,769 MB is one vCPU
CORE_STEPS = ((3008, 2), (5307, 3), (7076, 4), (8845, 5))  # (up to this memory size, cores)
MAX_CORES = 6  # above the last step, to 10,240 MB
ACCOUNT_CONCURRENCY = 1000
"""Lambda's default concurrency limit of an account in a region (AWS Lambda Developer Guide,
"Lambda quotas"); the stand-in enforces it too."""
UNRESERVED_MINIMUM = 100
"""Lambda keeps this much of the account's concurrency unreserved: reserved and provisioned
concurrency of one function go up to ``ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM``."""
MEMORY_HEADROOM = 0.8  # capacity leaves a fifth of MemAvailable to everything else


def lambda_cores(memory_mb: int) -> int:
    """The cores an environment of ``memory_mb`` sees on Lambda (``CORE_STEPS``)."""
    for up_to, cores in CORE_STEPS:
        if memory_mb <= up_to:
            return cores
    return MAX_CORES


def lambda_shape(memory_mb: int, machine_cores: int) -> Shape:
    """Lambda's environment of ``memory_mb``: ``memory_mb / 1769`` CPUs of quota, Lambda's
    visible cores capped at ``machine_cores`` (the cores this process may use), and a memory
    limit of ``memory_mb``. A quota above the visible cores is kept as Lambda's share (it is
    then never reached: this machine is smaller than the environment)."""
    if memory_mb < 1:
        raise ValueError(f"memory_mb={memory_mb!r}: a memory size is at least 1 MB")
    if machine_cores < 1:
        raise ValueError(f"machine_cores={machine_cores!r}: at least one core")
    return Shape(cpus=memory_mb / MB_PER_VCPU, cores=min(lambda_cores(memory_mb), machine_cores),
                 memory_mb=memory_mb)


def capacity(memory_mb: int, machine_cores: int, mem_available_mb: int) -> Capacity:
    """How many environments of ``memory_mb`` run at once here at their full CPU share:
    ``min(floor(cores / share), floor(0.8 * MemAvailable / memory_mb))``, at least 1, with a
    sentence naming the bound that decided it."""
    share = memory_mb / MB_PER_VCPU
    by_cpu = math.floor(machine_cores / share)
    by_memory = math.floor(MEMORY_HEADROOM * mem_available_mb / memory_mb)
    cpu_text = (f"{machine_cores} cores / {share:.3f} vCPU per environment = {by_cpu}")
    memory_text = (f"{MEMORY_HEADROOM:.0%} of MemAvailable {mem_available_mb} MB / "
                   f"{memory_mb} MB per environment = {by_memory}")
    if by_cpu <= by_memory:
        reason = f"CPU bound: {cpu_text} (memory allows {by_memory})"
    else:
        reason = f"memory bound: {memory_text} (CPU allows {by_cpu})"
    concurrency = min(by_cpu, by_memory)
    if concurrency < 1:
        reason += "; one environment does not fit at its full share, 1 runs anyway"
    return Capacity(max(1, concurrency), reason)


def check_environments_fit(count: int, memory_mb: int, available_mb: int) -> None:
    """``ValueError`` naming the numbers when ``count`` environments of ``memory_mb`` (each is
    limited to its memory size, and may use all of it) need more than ``available_mb``, this
    machine's ``MemAvailable``: the stand-in would start them and the kernel would kill them."""
    if count * memory_mb > available_mb:
        raise ValueError(
            f"{count} environments x memory_mb={memory_mb} = {count * memory_mb:,} MB, and this "
            f"machine has {available_mb:,} MB available (MemAvailable): the local Lambda stand-in "
            f"holds each environment at its memory size; at most "
            f"{available_mb // memory_mb} of {memory_mb} MB fit here")


def mem_available_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """``MemAvailable`` of ``/proc/meminfo``, in MB."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"{meminfo} has no MemAvailable line")


def group_name(function: str, environment: int) -> str:
    """A cgroup name for environment ``environment`` of ``function``: ``lambda-<function
    sanitised>-<id>-<random hex>`` (lowercase letters, digits, dashes: ``shaping.GROUP_NAME``)."""
    clean = re.sub(r"[^a-z0-9]+", "-", function.lower()).strip("-")[:40] or "fn"
    return f"lambda-{clean}-{environment}-{secrets.token_hex(4)}"
