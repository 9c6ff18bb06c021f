"""Targets in parallel only when all are real AWS endpoints, and a cancel that reaches them."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from bench.clock import FakeClock
from bench.fanout import run_parallel, schedule
from bench.provenance import Provenance
from bench.sweep import sweep
from bench.targets import TargetSpec, benchmark_target
from tests.bench.support import answers_after, payloads, quick

REAL = {"sagemaker": "measured-real", "lambda": "measured-real", "local": "measured-local"}


def _source(deployer: str) -> Provenance:
    return REAL[deployer]  # type: ignore[return-value]


def test_real_aws_targets_run_in_parallel_up_to_the_limit():
    s = schedule([("sm", "sagemaker"), ("fn", "lambda"), ("fn2", "lambda")], 2, _source)
    assert (s.parallel, s.at_once) == (True, 2)
    assert s.line() == ("targets benchmarked in parallel, 2 at a time: every target is a real "
                        "AWS endpoint; only the load generator runs here")


def test_one_local_target_makes_the_schedule_sequential_and_is_named():
    s = schedule([("sm", "sagemaker"), ("box", "local")], 4, _source)
    assert not s.parallel
    assert s.line().startswith("targets benchmarked one after the other: box measures on this "
                               "machine")


def test_a_single_target_or_a_limit_of_one_is_sequential_and_a_limit_below_one_is_refused():
    assert schedule([("sm", "sagemaker")], 4, _source).reason == "one target"
    assert schedule([("a", "lambda"), ("b", "lambda")], 1, _source).reason == \
        "max_parallel_targets=1"
    with pytest.raises(ValueError, match="max_parallel_targets must be >= 1, got 0"):
        schedule([("a", "lambda")], 0, _source)


def test_the_stand_ins_on_this_machine_are_never_scheduled_in_parallel(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the moto server's place
    assert not schedule([("sm", "sagemaker"), ("fn", "lambda")], 4).parallel


def test_parallel_items_overlap_and_results_keep_their_order():
    together = threading.Barrier(3, timeout=30)  # only passes if three run at once

    def work(item: int, stop: threading.Event) -> int:
        together.wait()
        return item * 10

    with ThreadPoolExecutor(4) as pool:
        out = run_parallel([1, 2, 3], lambda i, stop: pool.submit(work, i, stop), 3)
    assert out == [10, 20, 30]


def test_at_once_bounds_how_many_run_together():
    running, most, lock = 0, 0, threading.Lock()
    pairs = threading.Barrier(2, timeout=30)  # items 0-3 wait for a partner, as a batch of 2

    def work(item: int, stop: threading.Event) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if item < 4:
            pairs.wait()  # unbatched, the pool's 4 threads would all be in here at once
        with lock:
            running -= 1
        return item

    with ThreadPoolExecutor(4) as pool:
        assert run_parallel(list(range(5)), lambda i, s: pool.submit(work, i, s), 2) == [
            0, 1, 2, 3, 4]
    assert most == 2


class _Interrupted(Future[str]):
    """A future whose first ``result`` is interrupted, as a signal in the waiting thread is."""

    def __init__(self, inner: Future[str]) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def result(self, timeout: float | None = None) -> str:
        self.calls += 1
        if self.calls == 1:
            raise KeyboardInterrupt
        return self.inner.result(timeout)


def test_an_interruption_sets_stop_waits_for_every_teardown_then_is_re_raised():
    torn_down: list[int] = []

    def work(item: int, stop: threading.Event) -> str:
        try:
            assert stop.wait(30), "stop was never set"
            return "stopped"
        finally:
            torn_down.append(item)

    with ThreadPoolExecutor(2) as pool:
        def submit(i: int, stop: threading.Event) -> Future[str]:
            f = pool.submit(work, i, stop)
            return _Interrupted(f) if i == 0 else f

        with pytest.raises(KeyboardInterrupt):
            run_parallel([0, 1], submit, 2)
    assert sorted(torn_down) == [0, 1]  # both ended before the interruption went on


def test_a_set_stop_starts_no_level_and_no_deploy():
    clock, stop = FakeClock(), threading.Event()
    stop.set()
    res = sweep(answers_after(clock, 0.005), payloads(), [1, 2], quick(duration_s=0.1),
                clock=clock, stop=stop)
    assert res.levels == [] and res.stopped_reason == (
        "stopped before level 1.0: the run is being cancelled")
    outcome = benchmark_target(TargetSpec(name="x", deployer="inprocess"), "models:/none",
                               payloads(), [1], quick(), stop=stop)
    assert outcome.run is None and outcome.error == "not started: the run is being cancelled"
