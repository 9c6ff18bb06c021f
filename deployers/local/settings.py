"""Settings of a local deployment: instances, workers, threads, balancer, pinning, CPU quota,
timeouts."""

from __future__ import annotations

from pydantic import Field

from deployers import balancer as lb
from deployers.base import ServingSettings


class LocalSettings(ServingSettings):
    """Settings of a local deployment."""

    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes per instance.")
    torch_threads: int = Field(
        1, ge=1, le=256,
        description="Intra-op threads per worker (OMP_NUM_THREADS/MKL_NUM_THREADS), so an "
        "instance uses at most workers * torch_threads cores. torch caps it at the cores the "
        "process may use: the effective count is min(torch_threads, cores).",
    )
    instances: int = Field(
        1, ge=1, le=16,
        description="Scoring servers; more than one are put behind one nginx load balancer.",
    )
    balancer: lb.Policy = Field(
        "least_conn",
        description="How nginx spreads requests over instances: 'least_conn' or 'round_robin'.",
    )
    startup_timeout_s: float = Field(
        180.0, gt=0, le=3600, description="Seconds every server gets to answer /ping."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Per-request timeout of the invoker and the balancer."
    )
    cpus: float | None = Field(
        None, gt=0, le=1024,
        description="CPU quota of each instance (fractional allowed: 0.5 is 50 ms of CPU per "
        "100 ms), enforced by a cgroup around the instance's scoring server and its workers. "
        "None: unshaped. Needs root and a writable cgroup tree, else it warns and runs "
        "unshaped (describe says shaping=none); more than the cores this process may use is "
        "refused.",
    )
    cpu_affinity: bool = Field(
        False,
        description="Pin instance i to its own block of workers*torch_threads cores with "
        "taskset (needs instances*workers*torch_threads <= the machine's cores).",
    )
