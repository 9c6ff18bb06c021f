"""What ``predict-check`` keeps of a measured level: the stand-in's CPU per request, and the
host the model needs."""

from __future__ import annotations

import numpy as np
import pytest

from bench.level import LevelResult, cores
from bench.level_usage import LevelUsage
from bench.predict_measure import host_of, levels_with_cpu
from bench.stats import OK


def level(users: int, answered: int, cpu_s: float | None, busy: float = 0.8,
          client: float = 0.1) -> LevelResult:
    """``answered`` requests of 5 ms in a 1 s window; the stand-in used ``cpu_s`` of CPU."""
    starts = np.linspace(0, 0.9e9, answered).astype(np.int64)
    usage = (None if cpu_s is None else
             LevelUsage("cgroup-v1", 1.0, cpu_s, 1.0, 1, 10, 0, 0.0, busy))
    return LevelResult("closed", float(users), starts, starts, starts + 5_000_000,
                       np.full(answered, 5.0), np.full(answered, OK, dtype=np.int8),
                       np.array([""] * answered, dtype=object), np.zeros(answered, dtype=bool),
                       0, 1_000_000_000, client, False, usage=usage)


def test_each_level_carries_the_stand_ins_cpu_per_answered_request() -> None:
    levels = levels_with_cpu([level(1, 200, 0.6), level(2, 400, 0.8), level(4, 500, None)])
    assert [lv.users for lv in levels] == [1, 2, 4]
    assert levels[0].cpu_ms == pytest.approx(3.0)  # 0.6 s of CPU over 200 requests
    assert levels[1].cpu_ms == pytest.approx(2.0)
    assert levels[2].cpu_ms is None  # usage not read: not measured, not zero


def test_a_level_with_no_answer_is_left_out() -> None:
    assert levels_with_cpu([level(1, 0, 0.0), level(2, 100, 0.5)])[0].users == 2


def test_the_host_holds_the_rest_of_the_machines_cpu_per_request_of_the_busiest_level() -> None:
    n = cores()
    host = host_of([level(1, 200, 0.6), level(8, 500, 0.9, busy=0.8, client=0.1)])
    client, background = 0.1 * n, 0.8 * n - 0.9 - 0.1 * n
    assert host.client_ms == pytest.approx(1000 * client / 500)
    assert host.target_ms == pytest.approx(1000 * 0.9 / 500)
    assert host.background_cores == pytest.approx(max(0.0, background))
    assert host.background_ms == pytest.approx(1000 * max(0.0, background) / 500)
