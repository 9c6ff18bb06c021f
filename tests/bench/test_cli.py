import subprocess
import sys

import pytest

from bench.cli import main


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["calibrate", "--users", "1,x"], "--users"),
        (["calibrate", "--users", "0,2"], "--users"),
        (["calibrate", "--delay-ms", "-1"], "--delay-ms"),
        (["calibrate", "--duration-s", "abc"], "--duration-s"),
        (["compare"], "--parent-run-id"),
        (["http", "--url", "http://127.0.0.1:1/invocations"], "--data"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


def test_calibrate_command_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "bench.cli", "calibrate", "--users", "1,2", "--warmup-s", "0.1",
         "--duration-s", "0.3"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode in (0, 1), out.stderr
    assert "users" in out.stdout and "p50_minus_delay_ms" in out.stdout
    assert ("PASS" in out.stdout) == (out.returncode == 0)
