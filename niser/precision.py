"""Which arithmetic scores the items: float32, or bfloat16 on the CPU's matrix units.

Scoring every session against every item (B x d times d x N: 87 % of a step's arithmetic on
Diginetica) is the one product big enough to gain from bfloat16. ``choose_precision`` decides at
run time, and says why, which of two paths runs:

``fp32``
    every product in float32.
``bf16``
    the scoring product in bfloat16 (8 significant bits) with float32 accumulation, on Intel AMX
    or AVX-512 BF16 units; the weights (master copy and optimizer state), the GNN, the softmax
    and the loss stay float32 (``niser.scoring`` holds both products and says what each path
    promises: training learns from bf16-rounded scores; any top-k is the float32 top-k).

``auto`` takes ``bf16`` on a CPU whose flags show ``amx_bf16`` or ``avx512_bf16`` (oneDNN then
runs bfloat16 natively, accumulating in float32), and on a CUDA device that supports bf16 once
``torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction`` is off (the top-k's error
bound assumes float32 accumulation, which that default-on setting lets cuBLAS skip); everywhere
else it falls back to ``fp32`` (on a CPU without the units bfloat16 would be emulated, slower
than float32). An explicit ``bf16`` is honoured anywhere, an explicit ``fp32`` always.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PathName = Literal["fp32", "bf16"]
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matmuls
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    """The path that runs and why, as logged with a training run."""

    path: PathName
    reason: str

    @property
    def bf16(self) -> bool:
        return self.path == "bf16"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo``; empty when unreadable
    (not Linux, or no ``flags`` line)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def _host_flags() -> frozenset[str]:
    return cpu_flags()


def _cuda_reduces_in_bf16() -> bool:
    return bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)


def choose_precision(requested: Precision, device: torch.device,
                     flags: Iterable[str] | None = None) -> PrecisionChoice:
    """The path for ``requested`` on ``device`` (see the module docstring for the rules).

    ``flags`` are the CPU flags to judge by (default: ``cpu_flags()``); tests pass their own.
    """
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32 requested")
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        reduced = _cuda_reduces_in_bf16()
        if requested == "bf16":
            how = "supports" if supported else "may not support"
            note = ", with reduced-precision reductions on" if reduced else ""
            return PrecisionChoice("bf16", f"bf16 requested; the CUDA device {how} bf16{note}")
        if not supported:
            return PrecisionChoice("fp32", "auto: the CUDA device does not support bf16")
        if reduced:
            return PrecisionChoice("fp32", "auto: cuBLAS may reduce bf16 products in bf16 "
                                           "(allow_bf16_reduced_precision_reduction is on)")
        return PrecisionChoice("bf16", "auto: the CUDA device supports bf16 with float32 "
                                       "accumulation")
    if device.type != "cpu":
        if requested == "bf16":
            return PrecisionChoice("bf16", f"bf16 requested on {device.type}")
        return PrecisionChoice("fp32", f"auto: no bf16 rule for device type {device.type!r}")
    have = _host_flags() if flags is None else frozenset(flags)
    native = sorted(have.intersection(BF16_CPU_FLAGS))
    onednn = torch.backends.mkldnn.is_available()
    if requested == "bf16":
        how = f"native ({', '.join(native)})" if native and onednn else "emulated, slower"
        return PrecisionChoice("bf16", f"bf16 requested; on this CPU bf16 matmuls are {how}")
    if not onednn:
        return PrecisionChoice("fp32", "auto: torch was built without oneDNN (mkldnn)")
    if not native:
        return PrecisionChoice("fp32", "auto: the CPU flags show neither amx_bf16 nor "
                                       "avx512_bf16, so bf16 matmuls would be emulated")
    return PrecisionChoice("bf16", f"auto: the CPU has {' and '.join(native)}")
