"""Following a flow run from the terminal: parameters as the Prefect CLI reads them, and which
log lines are printed how (the live follow runs in test_flows.py, against a Prefect server)."""

from __future__ import annotations

import datetime as dt
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import Log

from flows.follow import NOISE, format_line, parse_params


def test_params_are_json_when_they_parse_and_strings_otherwise():
    assert parse_params(["epochs=5", "levels=[1, 2]", "dataset=synthetic:n_items=80",
                         "slo_ms=20.5"]) == {"epochs": 5, "levels": [1, 2],
                                             "dataset": "synthetic:n_items=80", "slo_ms": 20.5}


@pytest.mark.parametrize("bad", ["epochs", "=5"])
def test_a_param_without_a_key_is_refused_with_an_example(bad):
    with pytest.raises(ValueError, match="key=value"):
        parse_params([bad])


def _log(message: str) -> Log:
    return Log(name="prefect.task_runs", level=20, message=message,
               timestamp=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
               flow_run_id=uuid4())


def test_a_line_names_the_task_it_came_from():
    line = format_line(_log("level 4.0: 120 requests"), "benchmark-local-1x2")
    assert line is not None and line.startswith("03:04:05 benchmark-local-1x2")
    assert line.endswith("level 4.0: 120 requests")
    assert format_line(_log("Beginning flow run"), None).split()[1] == "flow"  # type: ignore[union-attr]


def test_task_completion_noise_is_left_out_and_a_summary_printed_as_is():
    assert format_line(_log(NOISE), "load_data-1") is None
    assert format_line(_log("niser v3\nMLflow:  http://x"), None) == "\nniser v3\nMLflow:  http://x"
