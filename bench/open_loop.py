"""Open loop: requests sent on a precomputed schedule of intended send times.

Promises:

- Arrivals are constant (``i / rate``) or Poisson (seeded exponential gaps).
- Latency is measured from each request's *intended* send time, so a stalled target inflates
  the latency of everything queued behind it (no coordinated omission).
- Worker threads are added on demand (up to ``max_workers``) so the generator is not the
  bottleneck; a request that starts more than ``late_tolerance_ms`` after its intended time
  counts in ``late_starts``.
- The level ends at most ``timeout_s`` + ``load_settings.GRACE_S`` after its last intended send:
  requests still in flight then, or never started, are recorded as timeouts.
- A request that finds no connection is recorded like any failure and the schedule goes on: the
  open loop cannot spin against a dead server (it sends what its schedule says, no more), so it
  does not back off (``bench.backoff`` is the closed loop's).
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

from bench.clock import MONOTONIC, Clock
from bench.level import LevelClock, LevelResult, Record, call, finish
from bench.load_settings import GRACE_S, OpenLoopSettings, PayloadSource
from bench.stats import OK, TIMEOUT
from deployers.base import Invoker

LEAD_NS = 20_000_000  # the schedule starts 20 ms after the call, for the first workers to start
_WAIT = -1  # OpenLoopState.take: no work yet, wait to be woken


def arrival_offsets_ns(
    rate: float, seconds: float, arrival: str, seed: int, cap: int
) -> np.ndarray:
    """Intended send times (ns from the start) of ``rate``/s arrivals in ``[0, seconds)``, at most
    ``cap`` of them. Constant: ``i / rate``. Poisson: cumulative exponential gaps (seeded)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate!r}")
    mean = rate * seconds
    n = min(cap, math.ceil(mean + 8 * math.sqrt(mean) + 10))  # Poisson: ample, then cut
    if arrival == "constant":
        t = np.arange(n, dtype=np.float64) / rate
    elif arrival == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
        t = np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if n else gaps
    else:
        raise ValueError(f"arrival must be 'constant' or 'poisson', got {arrival!r}")
    return (t[t < seconds][:cap] * 1e9).astype(np.int64)


class _Worker:
    """One worker's mailbox: the request handed to it, and the event that wakes it."""

    def __init__(self) -> None:
        self.slot: int | None = None
        self.wake = threading.Event()


class OpenLoopState:
    """Shared by the scheduler and the workers of one open-loop level; guarded by ``lock``.

    The scheduler ``submit``s each request when it is due: straight to an idle worker, else to
    the backlog, which busy workers drain before going idle again."""

    def __init__(self, intended: list[int], n_warm: int, late_ns: int) -> None:
        self.lock = threading.Lock()
        self.intended = intended
        self.n_warm = n_warm
        self.late_ns = late_ns
        self.backlog: deque[int] = deque()
        self.idle: list[_Worker] = []
        self.workers = 0
        self.starting = 0  # spawned, not yet at their first ``take``
        self.records: list[Record] = []
        self.inflight: dict[int, int] = {}  # request index -> actual start
        self.taken: set[int] = set()
        self.late = 0
        self.stopping = False
        self.closed = False
        self.exited = 0
        self.all_exited = threading.Event()

    def submit(self, i: int) -> bool:
        """Hand request ``i`` out; True when the backlog outgrows the workers about to start."""
        if self.idle:
            worker = self.idle.pop()
            worker.slot = i
            worker.wake.set()
            return False
        self.backlog.append(i)
        return len(self.backlog) > self.starting

    def take(self, worker: _Worker, now: int, first: bool) -> int | None:
        """The next request for ``worker``, started at ``now``; ``_WAIT`` to wait for one, None to
        stop."""
        if first:
            self.starting -= 1
        if self.closed:
            return None
        if worker.slot is not None:
            i, worker.slot = worker.slot, None
        elif self.backlog:
            i = self.backlog.popleft()
        elif self.stopping:
            return None
        else:
            worker.wake.clear()
            self.idle.append(worker)
            return _WAIT
        self.taken.add(i)
        self.inflight[i] = now
        if now - self.intended[i] > self.late_ns:
            self.late += 1
        return i

    def done(self, i: int, start: int, end: int, status: int, err: str) -> None:
        """Record request ``i``."""
        del self.inflight[i]
        self.records.append((self.intended[i], start, end, status, err, i < self.n_warm))

    def stop(self) -> None:
        """No more requests: idle workers stop, busy ones after the backlog."""
        self.stopping = True
        for worker in self.idle:
            worker.wake.set()
        self.idle.clear()

    def exit(self) -> None:
        self.exited += 1
        if self.exited == self.workers:
            self.all_exited.set()

    def close(self, now: int) -> int:
        """End the level at ``now``: requests in flight or never started become timeouts.
        Returns how many were abandoned in flight."""
        self.closed = True
        for i, start in self.inflight.items():
            self.records.append((self.intended[i], start, now, TIMEOUT, "AbandonedInFlight",
                                 i < self.n_warm))
        for i, when in enumerate(self.intended):
            if i not in self.taken:
                self.records.append((when, -1, now, TIMEOUT, "NeverStarted", i < self.n_warm))
        return len(self.inflight)


def open_loop(
    invoker: Invoker, payloads: PayloadSource, rate: float,
    settings: OpenLoopSettings | None = None, clock: Clock = MONOTONIC,
) -> LevelResult:
    """Send at ``rate`` requests/s by schedule; latency from intended send time."""
    s = settings or OpenLoopSettings()
    timeout_ns = int(s.timeout_s * 1e9)
    warm_ns = int(s.warmup_s * 1e9)
    steady = arrival_offsets_ns(rate, s.duration_s, s.arrival, s.seed + 1, s.max_requests)
    offsets = np.concatenate([
        arrival_offsets_ns(rate, s.warmup_s, s.arrival, s.seed, s.warmup_requests),
        warm_ns + steady,
    ])
    started = LevelClock.start(clock)
    base = started.wall0_ns + LEAD_NS
    intended = (base + offsets).tolist()
    st = OpenLoopState(intended, int((offsets < warm_ns).sum()), int(s.late_tolerance_ms * 1e6))

    def work() -> None:
        me, first = _Worker(), True
        while True:
            with st.lock:
                i = st.take(me, clock.now_ns(), first)
            first = False
            if i == _WAIT:
                clock.wait(me.wake, None)
                continue
            if i is None:
                break
            start, end, status, err, _ = call(invoker, payloads.next_batch(), s.k, timeout_ns,
                                              clock)
            if status == OK and end - intended[i] > timeout_ns:
                status, err = TIMEOUT, "SlowerThanTimeoutFromIntended"
            with st.lock:
                if st.closed:
                    return  # the level was given up on: this thread no longer counts
                st.done(i, start, end, status, err)
        with st.lock:
            st.exit()

    def spawn() -> None:
        with st.lock:
            st.workers += 1
            st.starting += 1
            name = f"open-{st.workers - 1}"
        clock.spawn(work, name=name)

    for _ in range(min(s.max_workers, max(2, math.ceil(rate * 0.01)))):
        spawn()
    for i, when in enumerate(intended):
        clock.sleep((when - clock.now_ns()) / 1e9)
        with st.lock:
            short = st.submit(i)
        if short and st.workers < s.max_workers:
            spawn()
    with st.lock:
        st.stop()
    last = intended[-1] if intended else base
    hard_stop = max(last, clock.now_ns()) + timeout_ns + int(GRACE_S * 1e9)
    clock.wait(st.all_exited, (hard_stop - clock.now_ns()) / 1e9)
    with st.lock:
        abandoned = st.close(clock.now_ns())
        records = list(st.records)
        late, threads = st.late, st.workers
    t0 = base + warm_ns
    t1 = base + warm_ns + int(s.duration_s * 1e9)
    if len(steady) >= s.max_requests:  # the window was cut short by max_requests
        t1 = min(t1, base + warm_ns + int(steady[-1]) + 1)
    return finish("open", rate, records, base, (t0, t1), started, s, late=late, threads=threads,
                  abandoned=abandoned)
