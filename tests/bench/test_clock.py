"""The fake clock moves time only when every thread it knows is waiting."""

import threading

from bench.clock import MONOTONIC, FakeClock


def test_threads_sleeping_together_finish_together_in_virtual_time():
    clock = FakeClock()
    ends: list[int] = []
    lock = threading.Lock()

    all_done = threading.Event()

    def nap():
        clock.sleep(0.005)
        with lock:
            ends.append(clock.now_ns())
            if len(ends) == 4:
                all_done.set()

    for i in range(4):
        clock.spawn(nap, name=f"nap-{i}")
    assert clock.wait(all_done, 1.0) is True
    assert ends == [5_000_000] * 4


def test_wait_times_out_at_the_virtual_deadline():
    clock = FakeClock(start_ns=1_000)
    assert clock.wait(threading.Event(), 0.25) is False
    assert clock.now_ns() == 1_000 + 250_000_000


def test_wait_returns_true_once_the_event_is_set_without_moving_time():
    clock = FakeClock()
    event = threading.Event()
    clock.spawn(event.set, name="setter")
    assert clock.wait(event, 10.0) is True
    assert clock.now_ns() == 0


def test_advance_and_spend_cpu_move_wall_and_cpu_time():
    clock = FakeClock()
    clock.advance(1.5)
    clock.spend_cpu(0.25)
    assert (clock.now_ns(), clock.cpu_s()) == (1_500_000_000, 0.25)


def test_the_real_clock_is_monotonic():
    a = MONOTONIC.now_ns()
    MONOTONIC.sleep(0)
    assert MONOTONIC.now_ns() >= a
