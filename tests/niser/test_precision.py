"""Which scoring path runs: chosen from faked CPU flags, recorded with the training result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from niser import precision
from niser.precision import choose_precision, cpu_flags
from niser.synthetic import SyntheticConfig, generate
from niser.train import TrainConfig, train

CPU = torch.device("cpu")
NO_BF16 = {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}  # AVX-512 without its bf16 extension


def test_auto_falls_back_to_fp32_when_the_cpu_flags_lack_bf16_units() -> None:
    choice = choose_precision("auto", CPU, flags=NO_BF16)
    assert choice.path == "fp32" and not choice.bf16
    assert "amx_bf16" in choice.reason and "avx512_bf16" in choice.reason


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_auto_takes_bf16_when_the_cpu_has_either_bf16_unit(flag: str) -> None:
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: auto never takes bf16 here")
    choice = choose_precision("auto", CPU, flags={*NO_BF16, flag})
    assert choice.path == "bf16" and flag in choice.reason


def test_auto_falls_back_to_fp32_without_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    choice = choose_precision("auto", CPU, flags={"amx_bf16"})
    assert choice.path == "fp32" and "oneDNN" in choice.reason


def test_explicit_requests_are_honoured_and_say_how_bf16_runs() -> None:
    assert choose_precision("fp32", CPU, flags={"amx_bf16"}).path == "fp32"
    emulated = choose_precision("bf16", CPU, flags=NO_BF16)
    assert emulated.path == "bf16" and "emulated" in emulated.reason


@pytest.mark.parametrize(("reduced", "path"), [(True, "fp32"), (False, "bf16")])
def test_auto_on_cuda_takes_bf16_only_with_float32_accumulation(
        monkeypatch: pytest.MonkeyPatch, reduced: bool, path: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(precision, "_cuda_reduces_in_bf16", lambda: reduced)
    assert choose_precision("auto", torch.device("cuda")).path == path


def test_cpu_flags_reads_the_flags_line_and_is_empty_without_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx512f amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_training_on_a_cpu_without_bf16_units_runs_and_records_fp32(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_host_flags", lambda: frozenset(NO_BF16))
    data = generate(SyntheticConfig(n_items=60, n_sessions=300, seed=1))
    result = train(data, TrainConfig(epochs=1, dim=8, device="cpu"), progress=False)
    assert result.precision.path == "fp32"
    assert "neither amx_bf16 nor avx512_bf16" in result.precision.reason
    assert result.config.precision == "auto"
