"""The benchmark commands: one exit status for each outcome, bad arguments named."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bench import calibrate as calibration
from bench.cli import bench
from bench.clock import FakeClock
from deployers.base import Prediction
from flows.cli import main


def run(*args: str):
    """``python -m bench.cli ARGS`` in-process: the click result."""
    return CliRunner().invoke(bench, list(args))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["calibrate", "--users", "1,x"], "--users"),
        (["calibrate", "--users", "0,2"], "--users"),
        (["calibrate", "--delay-ms", "-1"], "--delay-ms"),
        (["calibrate", "--duration-s", "abc"], "--duration-s"),
        (["compare"], "--parent-run-id"),
        (["http", "--url", "http://127.0.0.1:1/invocations"], "--data"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(argv, option):
    result = run(*argv)
    assert result.exit_code == 2
    assert option in result.stderr


def fake_calibration(overhead_ms: float):
    """``calibrate`` replaced by a measurement of an invoker ``overhead_ms`` slower than the
    delay, on the fake clock."""
    def calibrate(delay_ms, users, warmup_s, duration_s):
        clock = FakeClock()

        def invoke(sessions, k=20):
            clock.sleep((delay_ms + overhead_ms) / 1e3)
            return Prediction([[1]], [[1.0]])

        return calibration.measure(invoke, delay_ms, users, warmup_s, duration_s, clock=clock)
    return calibrate


def test_calibrate_within_the_bound_prints_pass_and_exits_0(monkeypatch):
    monkeypatch.setattr(calibration, "calibrate", fake_calibration(0.25))
    result = run("calibrate", "--users", "1,2", "--warmup-s", "0.1", "--duration-s", "0.3")
    assert result.exit_code == 0, result.output
    assert "p50_minus_delay_ms" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == "PASS"


def test_calibrate_missing_the_bound_prints_fail_and_exits_1(monkeypatch):
    monkeypatch.setattr(calibration, "calibrate", fake_calibration(2.0))
    result = run("calibrate", "--users", "1,2", "--warmup-s", "0.1", "--duration-s", "0.3")
    assert result.exit_code == 1
    assert result.stdout.rstrip().splitlines()[-1] == "FAIL"


def test_niser_mlops_carries_the_benchmark_commands():
    for command in ("calibrate", "http", "prices", "compare"):
        assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0


def test_niser_mlops_benchmark_levels_default_to_the_default_levels():
    result = CliRunner().invoke(main, ["benchmark", "--help"])
    assert "1,2,4,6,8,11,16" in result.stdout


def test_python_dash_m_bench_cli_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "bench.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in ("calibrate", "compare", "http", "prices"))
