"""Load generation against any deployer's ``Invoker``: closed loop, open loop, sweeps, cold start.

Promises:

- **Closed loop** (``closed_loop``): N user threads, no think time. A warm-up (bounded in time and
  in requests) is followed by a steady-state window that ends after ``duration_s`` or
  ``max_requests``, whichever comes first. Every loop stops by itself.
- **Open loop** (``open_loop``): requests follow a precomputed schedule of intended send times
  (constant or Poisson arrivals). Latency is measured from each request's *intended* send time,
  so a stalled target inflates the latency of everything queued behind it (no coordinated
  omission). Worker threads are added on demand (up to ``max_workers``) so the generator is not
  the bottleneck; requests that start more than ``late_tolerance_ms`` after their intended time
  are counted in ``late_starts``.
- **Nothing is dropped.** Every request is a record (intended/actual start, end, latency, status,
  error class), errors and warm-up included. A request slower than ``timeout_s`` counts as a
  timeout. A level ends at most ``timeout_s`` (+ a small grace) after its window: requests still
  in flight then, or never started, are recorded as timeouts and their threads are abandoned.
- A **sweep** runs levels in order within ``budget_s`` and returns what it measured, even when
  the target dies midway; it stops early after a level where every request failed.
- The process CPU used during each level is measured (``time.process_time``); above
  ``cpu_warn_fraction`` of the available cores the level is flagged ``cpu_saturated`` and a
  warning is logged: the generator itself may then be what limits the figures.

Why plain threads and not Locust (checked against Locust's documentation, "Testing other
systems/protocols", and its ``wait_time`` reference):

1. ``import locust`` applies gevent's ``monkey.patch_all()`` to the whole process, and Locust's
   docs require every protocol library to be patchable by gevent: a call that does its work in
   compiled code "will block the whole Locust/Python process (in practice limiting you to running
   a single User per worker process)". Our benchmark runs in the same process as the Prefect flow,
   MLflow's logging threads and, for the ``inprocess`` target, torch, whose forward pass runs in
   C++ without yielding to gevent: N Locust users would be served one at a time. boto3 itself is
   pure Python over patched sockets and would work, but patching a process whose threads are
   already running (Prefect's task runner, MLflow's async logging) is what gevent warns against.
   Python's GIL is released during socket waits and ``time.sleep``, and torch releases it in its
   kernels, so ordinary threads give real concurrency for this I/O- and C-bound workload; the
   calibration check (``bench.calibrate``) measures the overhead this adds.
2. Locust has no intended-send-time accounting. Its open-loop helpers (``constant_throughput``,
   ``constant_pacing``) are waits applied *after* each task; they "can only limit throughput, not
   launch new users to reach the target", and response times are measured from the actual send.
   Latency measured that way hides queueing behind a stalled request (coordinated omission).

Where one load machine is not enough (the calibration shows the generator's CPU share per level),
Locust's distributed mode against an HTTP endpoint is the tool to reach for; the figures are then
closed-loop only.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import Field

from bench.stats import ERROR, OK, TIMEOUT, LevelStats, summarize
from deployers.base import Invoker, Settings

log = logging.getLogger(__name__)

GRACE_NS = 200_000_000  # extra wait after the per-request timeout before giving up on threads


class PayloadSource(Protocol):
    """Anything that hands out request batches, thread-safely (``bench.payloads.Payloads``)."""

    def next_batch(self) -> list[list[int]]: ...


class LoadSettings(Settings):
    """How one load level is run (closed or open loop)."""

    warmup_s: float = Field(
        default=2.0, ge=0, description="Warm-up seconds before the window (excluded from stats)."
    )
    warmup_requests: int = Field(
        default=10_000, ge=0, description="Warm-up also ends after this many requests."
    )
    duration_s: float = Field(
        default=10.0, gt=0, description="Steady-state window length in seconds."
    )
    max_requests: int = Field(
        default=100_000, ge=1, description="The window also ends after this many requests."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="A request slower than this counts as a timeout."
    )
    k: int = Field(default=20, ge=1, le=1000, description="Top-k asked of the model per request.")
    cpu_warn_fraction: float = Field(
        default=0.9, gt=0, le=1,
        description="Flag a level when the process uses more than this share of the cores.",
    )


class OpenLoopSettings(LoadSettings):
    """Open-loop extras: arrival process and generator capacity."""

    arrival: Literal["constant", "poisson"] = Field(
        default="constant",
        description="Inter-arrival times: fixed 1/rate, or exponential with mean 1/rate.",
    )
    seed: int = Field(default=0, description="Seed of the Poisson schedule.")
    max_workers: int = Field(
        default=256, ge=1, description="Most worker threads the generator may start."
    )
    late_tolerance_ms: float = Field(
        default=1.0, ge=0,
        description="A start later than this after its intended send time counts as late.",
    )


@dataclass
class LevelResult:
    """Raw records of one level plus how the generator fared. Times are ns from the level start."""

    mode: Literal["closed", "open"]
    level: float
    intended_ns: np.ndarray  # int64
    start_ns: np.ndarray  # int64, -1 for a request that never started
    end_ns: np.ndarray  # int64
    latency_ms: np.ndarray  # float64, end - intended
    status: np.ndarray  # int8: OK / ERROR / TIMEOUT
    error: np.ndarray  # object: error class ("" when ok)
    warmup: np.ndarray  # bool
    t0_ns: int
    t1_ns: int
    cpu_fraction: float
    cpu_saturated: bool
    late_starts: int = 0
    threads: int = 0
    abandoned: int = 0

    def stats(self) -> LevelStats:
        return summarize(
            self.level, self.intended_ns, self.end_ns, self.latency_ms, self.status,
            self.t0_ns, self.t1_ns,
        )

    def frame(self) -> pd.DataFrame:
        """One row per request (warm-up included, flagged)."""
        return pd.DataFrame({
            "mode": self.mode, "level": self.level,
            "intended_ns": self.intended_ns, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "latency_ms": self.latency_ms, "status": self.status, "error": self.error,
            "warmup": self.warmup,
            "in_window": (self.intended_ns >= self.t0_ns) & (self.intended_ns < self.t1_ns),
        })


@dataclass
class SweepResult:
    """The levels a sweep measured, in order, and why it stopped early (if it did)."""

    mode: Literal["closed", "open"]
    levels: list[LevelResult] = field(default_factory=list)
    planned: list[float] = field(default_factory=list)
    stopped_reason: str | None = None
    elapsed_s: float = 0.0

    @property
    def cpu_saturated(self) -> bool:
        return any(lv.cpu_saturated for lv in self.levels)

    def stats(self) -> list[LevelStats]:
        return [lv.stats() for lv in self.levels]

    def frame(self) -> pd.DataFrame:
        """Raw per-request records of every level."""
        if not self.levels:
            return pd.DataFrame(columns=_FRAME_COLUMNS)
        return pd.concat([lv.frame() for lv in self.levels], ignore_index=True)


_FRAME_COLUMNS = ["mode", "level", "intended_ns", "start_ns", "end_ns", "latency_ms", "status",
                  "error", "warmup", "in_window"]

# One record: intended, start, end, status, error class, warm-up.
_Record = tuple[int, int, int, int, str, bool]


def _classify(exc: BaseException) -> tuple[int, str]:
    """Status and error class of a failed request (timeouts recognised through causes)."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    name = type(exc).__name__
    status_code = getattr(exc, "status", None)
    if status_code is not None:
        name = f"{name}({status_code})"
    if len(chain) > 1:
        name = f"{name}:{type(chain[-1]).__name__}"
    if any(isinstance(e, TimeoutError) for e in chain):
        return TIMEOUT, name
    return ERROR, name


def _call(
    invoker: Invoker, batch: list[list[int]], k: int, timeout_ns: int
) -> tuple[int, int, int, str]:
    """Send one request: (start, end, status, error class)."""
    start = time.perf_counter_ns()
    try:
        invoker(batch, k)
    except Exception as exc:  # every failure is a record, never dropped
        end = time.perf_counter_ns()
        status, err = _classify(exc)
        return start, end, status, err
    end = time.perf_counter_ns()
    if end - start > timeout_ns:
        return start, end, TIMEOUT, "SlowerThanTimeout"
    return start, end, OK, ""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _finish(
    mode: Literal["closed", "open"], level: float, records: list[_Record], base: int,
    t0: int, t1: int, cpu0: float, wall0: int, settings: LoadSettings, late: int,
    threads: int, abandoned: int,
) -> LevelResult:
    wall = (time.perf_counter_ns() - wall0) / 1e9
    cpu_fraction = (time.process_time() - cpu0) / (wall * _cores()) if wall > 0 else 0.0
    saturated = cpu_fraction > settings.cpu_warn_fraction
    if saturated:
        log.warning(
            "load generator process used %.0f%% of %d cores at level %s (threshold %.0f%%): "
            "the figures may be limited by the generator, not the target",
            100 * cpu_fraction, _cores(), level, 100 * settings.cpu_warn_fraction,
        )
    arr = np.array([r[:4] for r in records], dtype=np.int64).reshape(-1, 4)
    intended, start, end = arr[:, 0] - base, arr[:, 1], arr[:, 2] - base
    start = np.where(start >= 0, start - base, -1)
    return LevelResult(
        mode=mode, level=float(level), intended_ns=intended, start_ns=start, end_ns=end,
        latency_ms=(end - intended) / 1e6, status=arr[:, 3].astype(np.int8),
        error=np.array([r[4] for r in records], dtype=object),
        warmup=np.array([r[5] for r in records], dtype=bool),
        t0_ns=t0 - base, t1_ns=t1 - base, cpu_fraction=cpu_fraction, cpu_saturated=saturated,
        late_starts=late, threads=threads, abandoned=abandoned,
    )


class _ClosedState:
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
        self.records: list[_Record] = []
        self.inflight: list[tuple[int, bool] | None] = [None] * users
        self.closed = False

    def claim(self, now: int) -> tuple[bool, bool]:
        """Under ``lock``: may a user send now, and is it warm-up?"""
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


def closed_loop(
    invoker: Invoker, payloads: PayloadSource, users: int, settings: LoadSettings | None = None
) -> LevelResult:
    """``users`` threads sending back to back; see the module docstring for the promises."""
    s = settings or LoadSettings()
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users!r}")
    timeout_ns = int(s.timeout_s * 1e9)
    cpu0, base = time.process_time(), time.perf_counter_ns()
    st = _ClosedState(users, s, base)

    def user(i: int) -> None:
        prev: _Record | None = None
        while True:
            with st.lock:
                if st.closed:
                    return
                if prev is not None:
                    st.records.append(prev)
                now = time.perf_counter_ns()
                go, warm = st.claim(now)
                st.inflight[i] = (now, warm) if go else None
            if not go:
                return
            batch = payloads.next_batch()
            start, end, status, err = _call(invoker, batch, s.k, timeout_ns)
            prev = (start, start, end, status, err, warm)

    threads = [threading.Thread(target=user, args=(i,), daemon=True, name=f"user-{i}")
               for i in range(users)]
    for t in threads:
        t.start()
    # Hard stop: warm-up + window + one timeout + grace, whatever the target does.
    hard_stop = base + int((s.warmup_s + s.duration_s) * 1e9) + timeout_ns + GRACE_NS
    for t in threads:
        t.join(max(0.0, (hard_stop - time.perf_counter_ns()) / 1e9))
    with st.lock:
        st.closed = True
        now = time.perf_counter_ns()
        if st.phase != "done":  # the window never closed by itself (stuck requests)
            if st.phase == "warm":
                st.t0 = now
            st.t1 = min(now, st.window_deadline) if st.window_deadline else now
        abandoned = 0
        for item in st.inflight:
            if item is not None:
                abandoned += 1
                st.records.append((item[0], item[0], now, TIMEOUT, "AbandonedInFlight", item[1]))
        records = list(st.records)
    return _finish("closed", users, records, base, st.t0, st.t1, cpu0, base, s, 0, users,
                   abandoned)


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


def open_loop(
    invoker: Invoker, payloads: PayloadSource, rate: float, settings: OpenLoopSettings | None = None
) -> LevelResult:
    """Send at ``rate`` requests/s by schedule; latency from intended send time."""
    s = settings or OpenLoopSettings()
    timeout_ns = int(s.timeout_s * 1e9)
    late_ns = int(s.late_tolerance_ms * 1e6)
    warm_ns = int(s.warmup_s * 1e9)
    steady = arrival_offsets_ns(rate, s.duration_s, s.arrival, s.seed + 1, s.max_requests)
    offsets = np.concatenate([
        arrival_offsets_ns(rate, s.warmup_s, s.arrival, s.seed, s.warmup_requests),
        warm_ns + steady,
    ])
    n_warm = int((offsets < warm_ns).sum())
    lock = threading.Lock()
    work: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    records: list[_Record] = []
    inflight: dict[int, tuple[int, int]] = {}  # request index -> (intended, start)
    taken: set[int] = set()
    state = {"closed": False, "idle": 0, "late": 0}
    workers: list[threading.Thread] = []
    cpu0, wall0 = time.process_time(), time.perf_counter_ns()
    base = wall0 + 20_000_000  # 20 ms lead for the first workers to start
    intended_abs = base + offsets

    def worker() -> None:
        while True:
            i = work.get()
            if i is None:
                return
            with lock:
                if state["closed"]:
                    return
                state["idle"] -= 1
                taken.add(i)
                now = time.perf_counter_ns()
                inflight[i] = (int(intended_abs[i]), now)
                if now - intended_abs[i] > late_ns:
                    state["late"] += 1
            start, end, status, err = _call(invoker, payloads.next_batch(), s.k, timeout_ns)
            intended = int(intended_abs[i])
            if status == OK and end - intended > timeout_ns:
                status, err = TIMEOUT, "SlowerThanTimeoutFromIntended"
            with lock:
                if state["closed"]:
                    return
                del inflight[i]
                records.append((intended, start, end, status, err, i < n_warm))
                state["idle"] += 1

    def spawn() -> None:
        with lock:
            state["idle"] += 1
        t = threading.Thread(target=worker, daemon=True, name=f"open-{len(workers)}")
        workers.append(t)
        t.start()

    for _ in range(min(s.max_workers, max(2, math.ceil(rate * 0.01)))):
        spawn()
    for i, when in enumerate(intended_abs.tolist()):
        delay = (when - time.perf_counter_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        work.put(i)
        with lock:
            short = state["idle"] < work.qsize()
        if short and len(workers) < s.max_workers:
            spawn()
    for _ in workers:
        work.put(None)
    last = int(intended_abs[-1]) if len(intended_abs) else base
    hard_stop = max(last, time.perf_counter_ns()) + timeout_ns + GRACE_NS
    for t in workers:
        t.join(max(0.0, (hard_stop - time.perf_counter_ns()) / 1e9))
    with lock:
        state["closed"] = True
        now = time.perf_counter_ns()
        abandoned = len(inflight)
        for i, (intended, start) in inflight.items():
            records.append((intended, start, now, TIMEOUT, "AbandonedInFlight", i < n_warm))
        for i in range(len(intended_abs)):
            if i not in taken:
                records.append((int(intended_abs[i]), -1, now, TIMEOUT, "NeverStarted", i < n_warm))
        records = list(records)
    t0 = base + warm_ns
    t1 = base + warm_ns + int(s.duration_s * 1e9)
    if len(steady) >= s.max_requests:  # the window was cut short by max_requests
        t1 = min(t1, base + warm_ns + int(steady[-1]) + 1)
    return _finish("open", rate, records, base, t0, t1, cpu0, wall0, s, int(state["late"]),
                   len(workers), abandoned)


def _level_cost_s(s: LoadSettings) -> float:
    return s.warmup_s + s.duration_s + s.timeout_s + GRACE_NS / 1e9


def _run_sweep(
    mode: Literal["closed", "open"], levels: list[float], s: LoadSettings,
    budget_s: float | None, run: Callable[[float, LoadSettings], LevelResult],
) -> SweepResult:
    if not levels:
        raise ValueError("levels is empty: give at least one concurrency level or rate")
    budget = budget_s if budget_s is not None else len(levels) * _level_cost_s(s)
    t_start = time.monotonic()
    out = SweepResult(mode=mode, planned=[float(x) for x in levels])
    for level in levels:
        left = budget - (time.monotonic() - t_start)
        if left < s.warmup_s + s.timeout_s + GRACE_NS / 1e9 + 0.05:
            out.stopped_reason = f"time budget of {budget:.1f} s spent before level {level}"
            break
        # Shrink the window so that even a hung target cannot overrun the budget.
        duration = min(s.duration_s, left - s.warmup_s - s.timeout_s - GRACE_NS / 1e9)
        res = run(level, s.model_copy(update={"duration_s": duration}))
        out.levels.append(res)
        st = res.stats()
        log.info("level %s: %d requests, %d ok, p50 %.2f ms, p95 %.2f ms, %.1f req/s",
                 level, st.count, st.ok, st.p50_ms, st.p95_ms, st.throughput_rps)
        if st.count > 0 and st.ok == 0:
            out.stopped_reason = (
                f"every request at level {level} failed ({st.errors} errors, {st.timeouts} "
                f"timeouts; first error class {res.error[res.status != OK][0]!r}); "
                "the target is down"
            )
            log.warning("sweep stopped: %s", out.stopped_reason)
            break
    out.elapsed_s = time.monotonic() - t_start
    return out


def sweep(
    invoker: Invoker, payloads: PayloadSource, levels: list[int] | None = None,
    settings: LoadSettings | None = None, budget_s: float | None = None,
) -> SweepResult:
    """Closed loop at each user count in ``levels`` (default 1, 2, 4, 6, 8, 11, 16), within
    ``budget_s`` seconds (default: the sum of each level's worst case)."""
    s = settings or LoadSettings()
    lv = list(levels) if levels is not None else [1, 2, 4, 6, 8, 11, 16]
    return _run_sweep("closed", [float(x) for x in lv], s, budget_s,
                      lambda level, ss: closed_loop(invoker, payloads, int(level), ss))


def rate_sweep(
    invoker: Invoker, payloads: PayloadSource, rates: list[float],
    settings: OpenLoopSettings | None = None, budget_s: float | None = None,
) -> SweepResult:
    """Open loop at each arrival rate (requests/s) in ``rates``, within ``budget_s`` seconds."""
    s = settings or OpenLoopSettings()
    return _run_sweep(
        "open", [float(r) for r in rates], s, budget_s,
        lambda rate, ss: open_loop(invoker, payloads, rate, ss),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class ColdStart:
    """Time from ``since`` (deploy finished) to the first successful response."""

    seconds: float | None
    attempts: int
    last_error: str


def cold_start(
    invoker: Invoker, batch: list[list[int]], since_ns: int | None = None,
    timeout_s: float = 120.0, poll_s: float = 0.05, k: int = 20,
) -> ColdStart:
    """Poll ``invoker`` until it answers; ``since_ns`` is a ``time.perf_counter_ns()`` taken when
    the deployment finished (default: now). ``seconds`` is ``None`` if nothing answered within
    ``timeout_s``."""
    since = time.perf_counter_ns() if since_ns is None else since_ns
    deadline = since + int(timeout_s * 1e9)
    attempts, last = 0, ""
    while time.perf_counter_ns() < deadline:
        attempts += 1
        try:
            invoker(batch, k)
        except Exception as exc:  # not up yet: remember why and poll again
            last = _classify(exc)[1] + f": {exc}"[:200]
            time.sleep(poll_s)
            continue
        return ColdStart((time.perf_counter_ns() - since) / 1e9, attempts, "")
    return ColdStart(None, attempts, last)
