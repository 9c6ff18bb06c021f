"""niser.batching: concurrent calls merged into batches, each caller getting its own answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from niser.batching import (
    ENV_BATCHING,
    ENV_MAX_BATCH_SESSIONS,
    BatchSettings,
    Coalescer,
    from_config,
)

Answer = tuple[tuple[int, ...], int]  # (the session, the k it was ranked with)


class GatedModel:
    """A model whose calls are recorded and, while ``gate`` is closed, block until it opens."""

    def __init__(self, fail_k: int | None = None) -> None:
        self.calls: list[tuple[list[list[int]], int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_k = fail_k

    def __call__(self, sessions: list[list[int]], k: int) -> list[Answer]:
        self.calls.append(([list(s) for s in sessions], k))
        self.entered.set()
        self.gate.wait(10)
        if k == self.fail_k:
            raise RuntimeError(f"model failed for k={k}")
        return [(tuple(s), k) for s in sessions]


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def start(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    return t, out


def hold_first_batch(model: GatedModel, co: Coalescer[Answer]) -> tuple[threading.Thread,
                                                                           dict[str, Any]]:
    """A first caller whose batch is running (blocked in the model) when this returns."""
    model.gate.clear()
    first = start(lambda: co([[1]], 5))
    assert model.entered.wait(10)
    return first


def test_a_call_on_an_idle_model_runs_at_once_alone():
    model = GatedModel()
    co = Coalescer(model, max_sessions=8)
    assert co([[1, 2], [3]], 4) == [((1, 2), 4), ((3,), 4)]
    assert model.calls == [([[1, 2], [3]], 4)]
    assert (co.stats.batches, co.stats.calls, co.stats.sessions) == (1, 1, 2)


def test_calls_arriving_during_a_batch_join_the_next_one_and_each_gets_its_own_rows():
    model = GatedModel()
    co = Coalescer(model, max_sessions=64)
    first, first_out = hold_first_batch(model, co)
    waiting = [start(lambda i=i: co([[10 + i], [20 + i]], 5)) for i in range(4)]
    wait_until(lambda: co.queued == 4)
    model.gate.set()
    for t, _ in [(first, first_out), *waiting]:
        t.join(10)
    assert first_out["value"] == [((1,), 5)]
    for i, (_, out) in enumerate(waiting):
        assert out["value"] == [((10 + i,), 5), ((20 + i,), 5)]
    assert len(model.calls) == 2  # the first alone, then the four together
    assert sorted(model.calls[1][0]) == sorted([[10 + i] for i in range(4)]
                                               + [[20 + i] for i in range(4)])
    assert (co.stats.batches, co.stats.largest) == (2, 8)


def test_callers_with_different_k_share_a_batch_but_each_is_ranked_with_its_own_k():
    model = GatedModel()
    co = Coalescer(model, max_sessions=64)
    first = hold_first_batch(model, co)
    a = start(lambda: co([[7]], 3))
    b = start(lambda: co([[8], [9]], 11))
    c = start(lambda: co([[6]], 3))
    wait_until(lambda: co.queued == 3)
    model.gate.set()
    for t, _ in (first, a, b, c):
        t.join(10)
    assert a[1]["value"] == [((7,), 3)]
    assert b[1]["value"] == [((8,), 11), ((9,), 11)]
    assert c[1]["value"] == [((6,), 3)]
    assert sorted((sorted(s), k) for s, k in model.calls[1:]) == [([[6], [7]], 3),
                                                                  ([[8], [9]], 11)]
    assert co.stats.batches == 2


def test_a_failing_model_call_fails_only_its_own_callers_and_later_calls_succeed():
    model = GatedModel(fail_k=13)
    co = Coalescer(model, max_sessions=64)
    first = hold_first_batch(model, co)
    bad = start(lambda: co([[1]], 13))
    good = start(lambda: co([[2]], 5))
    wait_until(lambda: co.queued == 2)
    model.gate.set()
    for t, _ in (first, bad, good):
        t.join(10)
    assert isinstance(bad[1]["error"], RuntimeError) and "k=13" in str(bad[1]["error"])
    assert good[1]["value"] == [((2,), 5)]
    assert co([[3]], 5) == [((3,), 5)]


def test_a_batch_holds_at_most_max_sessions_and_a_larger_call_runs_alone():
    model = GatedModel()
    co = Coalescer(model, max_sessions=3)
    first = hold_first_batch(model, co)
    calls = [start(lambda i=i: co([[i], [i]], 5)) for i in range(3)]
    wait_until(lambda: co.queued == 3)
    model.gate.set()
    for t, _ in (first, *calls):
        t.join(10)
    assert [len(s) for s, _ in model.calls[1:]] == [2, 2, 2]  # 2 + 2 > 3: one call per batch
    assert co([[1]] * 5, 5) == [((1,), 5)] * 5  # over the cap: alone, not refused
    assert co.stats.largest == 5


def test_a_model_answering_the_wrong_row_count_fails_its_callers_with_the_counts():
    co = Coalescer(lambda sessions, k: [], max_sessions=4)
    with pytest.raises(RuntimeError, match="0 rows for 1 sessions"):
        co([[1]], 5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_max_sessions_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_sessions"):
        Coalescer(GatedModel(), max_sessions=bad)


def test_settings_come_from_model_config_and_the_environment_overrides_them():
    assert from_config(None) == BatchSettings()
    config = BatchSettings(enabled=False, max_sessions=16).model_config()
    assert from_config(config) == BatchSettings(False, 16)
    env = {ENV_BATCHING: "on", ENV_MAX_BATCH_SESSIONS: "32"}
    assert from_config(config, env) == BatchSettings(True, 32)
    assert from_config(config, {ENV_BATCHING: "  "}) == BatchSettings(False, 16)


@pytest.mark.parametrize(("config", "env", "named"), [
    ({"batching": "maybe"}, {}, "model_config 'batching'"),
    ({"max_batch_sessions": 0}, {}, "model_config 'max_batch_sessions'"),
    ({}, {ENV_BATCHING: "2"}, ENV_BATCHING),
    ({}, {ENV_MAX_BATCH_SESSIONS: "many"}, ENV_MAX_BATCH_SESSIONS),
])
def test_a_malformed_setting_names_its_key_or_variable(config, env, named):
    with pytest.raises(ValueError, match=named):
        from_config(config, env)
