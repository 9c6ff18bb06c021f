"""Settings of a local deployment: instances, workers, threads, balancer, pinning, CPU quota,
timeouts, the front door's connection limit."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from deployers import balancer as lb
from deployers.base import SettingsError
from deployers.serving import ServingSettings


class LocalSettings(ServingSettings):
    """Settings of a local deployment."""

    workers: int | None = Field(
        None, ge=1, le=64,
        description="uvicorn worker processes per instance. None: as many as the instance's "
        "CPUs (cpus rounded down, at least 1; unshaped: this machine's cores / instances) "
        "divided by torch_threads when that is given, as MLflow's SageMaker container runs "
        "one per CPU.")
    torch_threads: int | None = Field(
        None, ge=1, le=256,
        description="Intra-op threads per worker (OMP_NUM_THREADS/MKL_NUM_THREADS), so an "
        "instance uses at most workers * torch_threads cores. None: the instance's CPUs / "
        "workers (at least 1). torch caps it at the cores the process may use: the effective "
        "count is min(torch_threads, cores). instances x workers x torch_threads above those "
        "cores is refused (check_fits).",
    )
    instances: int = Field(
        1, ge=1, le=16,
        description="Scoring servers, behind the deployment's nginx front door (which "
        "balances them when there are several).",
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
    max_connections: int = Field(
        1024, ge=1, le=16384,
        description="Requests the deployment's front door (nginx) lets in at once; more get "
        "429 TOO_MANY_REQUESTS. Set well above the concurrency a benchmark offers.")
    cpus: float | None = Field(
        None, gt=0, le=1024,
        description="CPU quota of each instance (fractional allowed: 0.5 is 50 ms of CPU per "
        "100 ms), enforced by a cgroup around the instance's scoring server and its workers. "
        "None: unshaped. Needs root and a writable cgroup tree, else it warns and runs "
        "unshaped (describe says shaping=none); more than the cores this process may use is "
        "refused.",
    )
    server: Literal["mlflow", "litserve"] = Field(
        "mlflow",
        description="What serves the model in each instance: 'mlflow' (`mlflow models serve`, "
        "the scoring server of MLflow's SageMaker container too) or 'litserve' (the same "
        "pyfunc behind LitServe with LitServe's request batching, an outside reference: "
        "deployers.local.litserve_app; needs the `litserve` extra). workers are LitServe's "
        "inference worker processes there.")
    litserve_max_batch: int = Field(
        32, ge=2, le=4096,
        description="server='litserve': requests LitServe collects into one batch at most "
        "(one model call per distinct params; at least 2, as at 1 LitServe does not batch).")
    litserve_batch_timeout_ms: float = Field(
        1.0, gt=0, le=1000,
        description="server='litserve': how long LitServe collects a batch (ms, > 0: at 0 its "
        "loop polls without sleeping).")
    cpu_affinity: bool = Field(
        False,
        description="Pin instance i to its own block of workers*torch_threads cores with "
        "taskset (needs instances*workers*torch_threads <= the machine's cores).",
    )


def cpu_budget(s: LocalSettings, cores: int) -> int:
    """The whole CPUs one instance may keep busy: ``cpus`` rounded down (at least 1), or, unshaped,
    ``cores`` shared by the instances (at least 1)."""
    if s.cpus is not None:
        return max(1, int(s.cpus))
    return max(1, cores // s.instances)


def with_workers(s: LocalSettings, cores: int) -> LocalSettings:
    """``s`` with ``workers`` and ``torch_threads`` filled in where None (see their fields), so
    that workers x torch_threads <= the instance's CPUs unless both were given."""
    budget = cpu_budget(s, cores)
    if s.workers is not None:
        workers = s.workers
    else:
        workers = max(1, budget // s.torch_threads) if s.torch_threads is not None else budget
    threads = s.torch_threads if s.torch_threads is not None else max(1, budget // workers)
    return s.model_copy(update={"workers": workers, "torch_threads": threads})


def sizes(s: LocalSettings) -> tuple[int, int]:
    """(workers, torch_threads) of settings that went through ``with_workers``."""
    if s.workers is None or s.torch_threads is None:
        raise ValueError("workers and torch_threads are filled in by with_workers first")
    return s.workers, s.torch_threads


def check_fits(s: LocalSettings, cores: int) -> LocalSettings:
    """``s`` (through ``with_workers``) when its instances fit ``cores``, the cores of this
    machine the process may use: ``instances x cpus <= cores`` and ``instances x workers x
    torch_threads <= cores`` and, for ``server='litserve'``, LitServe installed; else
    ``SettingsError`` naming the settings and the numbers."""
    if s.cpus is not None and s.cpus * s.instances > cores:
        shape = f"cpus={s.cpus}" if s.instances == 1 else (
            f"instances={s.instances} x cpus={s.cpus}")
        raise SettingsError(
            f"{shape}: the shape needs {s.cpus * s.instances:g} CPUs and this machine has"
            f" {cores} cores (those this process may use); lower cpus or instances so that"
            f" instances x cpus <= {cores}, or deploy it on a machine with enough cores (it"
            " is never run smaller than asked)")
    if s.server == "litserve" and importlib.util.find_spec("litserve") is None:
        raise SettingsError("server='litserve' needs LitServe in this environment: pip install "
                            "'niser-mlops[litserve]' (or server='mlflow')")
    workers, threads = sizes(s)
    if s.instances * workers * threads > cores:
        raise SettingsError(
            f"instances={s.instances} x workers={workers} x torch_threads={threads} = "
            f"{s.instances * workers * threads} threads and this machine has {cores} cores "
            f"(those this process may use): each worker's torch threads would share cores "
            f"with the others' and measure contention, not the shape; lower them so that "
            f"instances x workers x torch_threads <= {cores}")
    return s
