"""Benchmark settings refuse inf/nan and what a load generator on this machine should not be
asked: levels above 1,024 users or more than 32 of them, hour-long windows, parallel fan-outs
above 16; the command line says so as a click error naming the option."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from bench.cli_options import LEVELS, NON_NEGATIVE, POSITIVE
from bench.fanout import MAX_PARALLEL, schedule
from bench.load_settings import (
    MAX_LEVEL,
    MAX_LEVEL_S,
    MAX_LEVELS,
    MAX_TIMEOUT_S,
    LoadSettings,
    OpenLoopSettings,
    check_levels,
)
from bench.recommend import Workload


def test_levels_within_the_bounds_are_kept():
    assert check_levels((1, 2, MAX_LEVEL)) == [1, 2, MAX_LEVEL]


@pytest.mark.parametrize("levels, match", [
    ([MAX_LEVEL + 1], "1025 users is outside 1..1024: each closed-loop user is a thread"),
    ([0, 1], "0 users is outside 1..1024"),
    (list(range(1, MAX_LEVELS + 2)), f"33 levels, more than the limit of {MAX_LEVELS}"),
    ([], "need one or more"),
])
def test_levels_outside_the_bounds_are_refused_naming_the_option(levels, match):
    with pytest.raises(ValueError, match=match) as info:
        check_levels(levels, "--levels")
    assert str(info.value).startswith("--levels: ")


@pytest.mark.parametrize("field, value", [
    ("duration_s", MAX_LEVEL_S + 1), ("warmup_s", MAX_LEVEL_S + 1),
    ("timeout_s", MAX_TIMEOUT_S + 1), ("max_requests", 10_000_001)])
def test_load_settings_refuse_values_above_their_limit_saying_why(field, value):
    with pytest.raises(ValidationError, match="above the limit of") as info:
        LoadSettings(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("field", ["duration_s", "warmup_s", "timeout_s", "cpu_warn_fraction"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_load_settings_refuse_inf_and_nan(field, value):
    with pytest.raises(ValidationError):
        LoadSettings(**{field: value})


def test_open_loop_workers_are_bounded_like_levels():
    with pytest.raises(ValidationError, match="above the limit of 1,024"):
        OpenLoopSettings(max_workers=MAX_LEVEL + 1)
    with pytest.raises(ValidationError):
        OpenLoopSettings(late_tolerance_ms=float("inf"))


@pytest.mark.parametrize("field", ["base_rps", "burst_rps", "p95_slo_ms", "bursts_per_hour"])
def test_workload_numbers_must_be_finite(field):
    raw = {"base_rps": 1.0, "p95_slo_ms": 50.0, field: float("inf")}
    with pytest.raises(ValidationError):
        Workload(**raw)


def test_parallel_targets_above_the_limit_are_refused_saying_why():
    assert schedule([("a", "lambda")], MAX_PARALLEL, source=lambda d: "measured-real").at_once == 1
    with pytest.raises(ValueError, match=f"max_parallel_targets=17 is above the limit of "
                                         f"{MAX_PARALLEL}: each target"):
        schedule([("a", "lambda")], MAX_PARALLEL + 1, source=lambda d: "measured-real")


@click.command()
@click.option("--users", type=LEVELS, default="1,2")
@click.option("--slo-ms", type=POSITIVE, default=50.0)
@click.option("--warmup-s", type=NON_NEGATIVE, default=1.0)
def _probe(users: list[int], slo_ms: float, warmup_s: float) -> None:
    click.echo(f"{users} {slo_ms} {warmup_s}")


@pytest.mark.parametrize("args, match", [
    (["--users", "1,2000"], "2000 users is outside 1..1024"),
    (["--users", ",".join(["1"] * 40)], "40 levels, more than the limit of 32"),
    (["--slo-ms", "inf"], "'inf' is not a finite number"),
    (["--slo-ms", "nan"], "'nan' is not a finite number"),
    (["--warmup-s", "-1"], "--warmup-s"),
])
def test_cli_number_types_refuse_out_of_bounds_and_non_finite_values(args, match):
    result = CliRunner().invoke(_probe, args)
    assert result.exit_code == 2, result.output
    assert match in result.output


def test_cli_number_types_accept_values_within_the_bounds():
    result = CliRunner().invoke(_probe, ["--users", "1,1024", "--slo-ms", "0.5"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "[1, 1024] 0.5 1.0"
