"""The load generator's clock: time, CPU time, sleeps, waits and the threads that use them.

Everything in ``bench`` that reads or spends time goes through a ``Clock``. ``MONOTONIC`` is the
real one (``time.perf_counter_ns``, ``time.process_time``, ``time.sleep``, ``Event.wait``).
``FakeClock`` is virtual time for tests: nothing waits for real, so timing tests are exact.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

_FOREVER = math.inf


class Clock(Protocol):
    """Monotonic nanoseconds, process CPU seconds, sleeping, waiting, and starting threads."""

    def now_ns(self) -> int:
        """Monotonic time in nanoseconds (any origin)."""
        ...

    def cpu_s(self) -> float:
        """CPU seconds used by this process so far."""
        ...

    def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` (at once when ``seconds <= 0``)."""
        ...

    def wait(self, event: threading.Event, timeout_s: float | None) -> bool:
        """Return once ``event`` is set (True) or ``timeout_s`` has passed (False)."""
        ...

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start ``target`` on a new daemon thread and return the thread."""
        ...


class MonotonicClock:
    """The real clock."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def cpu_s(self) -> float:
        return time.process_time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout_s: float | None) -> bool:
        return event.wait(None if timeout_s is None else max(0.0, timeout_s))

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True, name=name)
        thread.start()
        return thread


MONOTONIC: Clock = MonotonicClock()


class FakeClock:
    """Virtual time shared by threads; it never waits for real time.

    The clock knows the threads it started (``spawn``), the threads that started them, and every
    thread that ever blocked in ``sleep`` or ``wait``. Once every one of them that is alive is
    blocked (and no awaited event is set), time jumps to the earliest wake-up. So N threads that
    each ``sleep(0.005)`` finish together 5 ms later, as they would on N cores. ``advance`` moves
    time by hand, and CPU time is whatever ``spend_cpu`` added. A thread blocked on anything else
    (a lock, a socket) holds time still until it comes back.
    """

    def __init__(self, start_ns: int = 0, poll_s: float = 0.001) -> None:
        self._cond = threading.Condition()
        self._now = start_ns
        self._cpu = 0.0
        self._poll_s = poll_s
        self._threads: set[threading.Thread] = set()
        self._blocked: dict[threading.Thread, tuple[float, threading.Event | None]] = {}

    def now_ns(self) -> int:
        with self._cond:
            return self._now

    def cpu_s(self) -> float:
        with self._cond:
            return self._cpu

    def spend_cpu(self, seconds: float) -> None:
        """Add ``seconds`` of CPU time, as a busy computation would."""
        with self._cond:
            self._cpu += seconds

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._cond:
            self._now += round(seconds * 1e9)
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._block(seconds, None)

    def wait(self, event: threading.Event, timeout_s: float | None) -> bool:
        return self._block(timeout_s, event)

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True, name=name)
        with self._cond:  # both known before it runs: time cannot jump past either's next step
            self._threads.add(threading.current_thread())
            self._threads.add(thread)
            thread.start()
        return thread

    def _block(self, timeout_s: float | None, event: threading.Event | None) -> bool:
        me = threading.current_thread()
        with self._cond:
            wake = _FOREVER if timeout_s is None else self._now + max(0, round(timeout_s * 1e9))
            self._threads.add(me)
            self._blocked[me] = (wake, event)
            self._cond.notify_all()  # a state change: let the others re-check
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= wake:
                        return False
                    self._jump_if_all_blocked()
                    if self._now < wake:
                        self._cond.wait(self._poll_s)  # polls for events set and threads ended
            finally:
                del self._blocked[me]

    def _jump_if_all_blocked(self) -> None:
        """Under the lock: move time to the earliest wake-up when nobody can run."""
        self._threads = {t for t in self._threads if t.is_alive() or t is threading.current_thread()}
        if any(t not in self._blocked for t in self._threads):
            return
        if any(ev is not None and ev.is_set() for _, ev in self._blocked.values()):
            return
        earliest = min(wake for wake, _ in self._blocked.values())
        if earliest != _FOREVER and earliest > self._now:
            self._now = int(earliest)
            self._cond.notify_all()
