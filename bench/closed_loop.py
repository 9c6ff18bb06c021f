"""Closed loop: N user threads sending back to back against any deployer's ``Invoker``.

Promises:

- No think time. A warm-up (bounded in time and in requests) is followed by a steady-state window
  that ends after ``duration_s`` or ``max_requests``, whichever comes first.
- The level stops by itself at most ``timeout_s`` + ``load_settings.GRACE_S`` after its window, whatever the
  target does: requests still in flight then are recorded as ``AbandonedInFlight`` timeouts and
  their threads are left behind.
- Once ``stop`` is set (the run is being cancelled) no user sends again: the level ends when the
  requests in flight return, its window cut short there.
- A user whose request found no connection (refused, reset, DNS, a timeout to connect:
  ``InvocationError.connection``) pauses before sending again, through the clock:
  ``bench.backoff``, 10 ms doubling to 1 s, started again by the next request that gets an
  answer. So a dead server costs each user ~7 attempts in its first second and one a second
  after, not tens of thousands. Every failure is still a record; an answer with an error status
  (4xx/5xx) never pauses. A pause ends early at the end of the warm-up or the window, or when
  ``stop`` is set.
"""

from __future__ import annotations

import threading
from functools import partial

from bench.backoff import Backoff
from bench.clock import MONOTONIC, Clock
from bench.level import LevelClock, LevelResult, Record, call, finish
from bench.load_settings import LoadSettings, PayloadSource
from bench.stats import TIMEOUT
from deployers.base import Invoker


class ClosedLoopState:
    """Shared by the user threads of one closed-loop level; every field guarded by ``lock``."""

    def __init__(self, users: int, s: LoadSettings, base: int) -> None:
        self.lock = threading.Lock()
        self.s = s
        self.phase = "warm"
        self.warm_deadline = base + int(s.warmup_s * 1e9)
        self.n_warm = 0
        self.n_steady = 0
        self.t0 = base
        self.t1 = base
        self.window_deadline = 0
        self.records: list[Record] = []
        self.inflight: list[tuple[int, bool] | None] = [None] * users
        self.closed = False
        self.running = users
        self.all_done = threading.Event()

    def claim(self, now: int, stopping: bool = False) -> tuple[bool, bool]:
        """Under ``lock``: may a user send now, and is it warm-up? Never once ``stopping``."""
        if stopping and self.phase != "done":
            if self.phase == "warm":
                self.t0 = now
            self.t1 = min(now, self.window_deadline) if self.window_deadline else now
            self.phase = "done"
        if self.phase == "warm":
            if now < self.warm_deadline and self.n_warm < self.s.warmup_requests:
                self.n_warm += 1
                return True, True
            self.phase, self.t0 = "steady", now
            self.window_deadline = now + int(self.s.duration_s * 1e9)
        if self.phase == "steady":
            if now < self.window_deadline and self.n_steady < self.s.max_requests:
                self.n_steady += 1
                return True, False
            self.phase, self.t1 = "done", min(now, self.window_deadline)
        return False, False

    def pause_s(self, now: int, wanted_s: float) -> float:
        """Under ``lock``: ``wanted_s`` cut to what is left of the current phase (0 once done)."""
        deadline = {"warm": self.warm_deadline, "steady": self.window_deadline}.get(self.phase)
        if deadline is None or self.closed:
            return 0.0
        return max(0.0, min(wanted_s, (deadline - now) / 1e9))

    def user_done(self) -> None:
        """Under ``lock``: one user thread has stopped."""
        self.running -= 1
        if self.running == 0:
            self.all_done.set()

    def close(self, now: int) -> int:
        """Under ``lock``: end the level at ``now``; requests in flight become timeouts.
        Returns how many were abandoned."""
        self.closed = True
        if self.phase != "done":  # the window never closed by itself (stuck requests)
            if self.phase == "warm":
                self.t0 = now
            self.t1 = min(now, self.window_deadline) if self.window_deadline else now
        abandoned = 0
        for item in self.inflight:
            if item is not None:
                abandoned += 1
                self.records.append((item[0], item[0], now, TIMEOUT, "AbandonedInFlight", item[1]))
        return abandoned


def closed_loop(
    invoker: Invoker, payloads: PayloadSource, users: int, settings: LoadSettings | None = None,
    clock: Clock = MONOTONIC, stop: threading.Event | None = None,
) -> LevelResult:
    """``users`` threads sending back to back; see the module docstring for the promises."""
    s = settings or LoadSettings()
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users!r}")
    timeout_ns = int(s.timeout_s * 1e9)
    started = LevelClock.start(clock)
    base = started.wall0_ns
    st = ClosedLoopState(users, s, base)

    never = threading.Event()

    def user(i: int) -> None:
        prev: Record | None = None
        backoff = Backoff()
        pause_s = 0.0
        while True:
            if pause_s > 0:  # the last request found no connection: record it, then pause
                with st.lock:
                    if st.closed:
                        return
                    assert prev is not None
                    st.records.append(prev)
                    st.inflight[i], prev = None, None
                    pause_s = st.pause_s(clock.now_ns(), pause_s)
                clock.wait(stop or never, pause_s)
            with st.lock:
                if st.closed:
                    return
                if prev is not None:
                    st.records.append(prev)
                now = clock.now_ns()
                go, warm = st.claim(now, stop is not None and stop.is_set())
                st.inflight[i] = (now, warm) if go else None
                if not go:
                    st.user_done()
                    return
            batch = payloads.next_batch()
            start, end, status, err, unreachable = call(invoker, batch, s.k, timeout_ns, clock)
            prev = (start, start, end, status, err, warm)
            pause_s = backoff.after(unreachable)

    for i in range(users):
        clock.spawn(partial(user, i), name=f"user-{i}")
    # Hard stop: warm-up + window + one timeout + grace, whatever the target does.
    hard_stop = base + int(s.level_worst_case_s() * 1e9)
    clock.wait(st.all_done, (hard_stop - clock.now_ns()) / 1e9)
    with st.lock:
        abandoned = st.close(clock.now_ns())
        records = list(st.records)
    return finish("closed", users, records, base, (st.t0, st.t1), started, s, threads=users,
                  abandoned=abandoned)

