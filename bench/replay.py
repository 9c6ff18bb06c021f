"""Trace-driven replay: real sessions sent through a session server, click by click, on schedule.

Promises:

- The clicks of one session are sent in order, one at a time: a click goes out at its intended
  time (``bench.replay_schedule``) or, when the session's previous answer comes later, as soon as
  that answer arrives. Sessions run concurrently on worker threads added on demand (up to
  ``max_workers``; a session due while every worker is busy waits in a backlog).
- Latency is measured from each click's *intended* time, so a stalled server inflates the
  latency of every click queued behind the stall (no coordinated omission).
- A click that goes out more than ``late_tolerance_ms`` after it could have (its intended time,
  or its session's previous answer when later) is a late start: the generator, not the server,
  was behind.
- Session ids are ``<run_id>-<trace id>`` (``run_id`` unique per replay), so repeated replays
  never share a session; each session is DELETEd after its last click.
- Every click is a ``ClickRecord``, failures included: the HTTP status (0 when no answer came),
  the error, the ``Server-Timing`` durations and the top-k items; a sender that raises makes a
  failed record too, so no click is lost and no replay hangs. A click that timed out, or
  was answered more than ``timeout_s`` after its intended time, is a timeout (``bench.stats``).
"""

from __future__ import annotations

import functools
import math
import re
import threading
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Protocol

import pandas as pd
from pydantic import Field

from bench.clock import MONOTONIC, Clock
from bench.level import LevelClock, LevelResult, Record, finish
from bench.load_settings import LoadSettings
from bench.open_loop import LEAD_NS
from bench.replay_client import ClickAnswer
from bench.replay_schedule import Schedule
from bench.replay_trace import Trace
from bench.stats import ERROR, OK, TIMEOUT
from deployers.base import Settings

_BAD_ID = re.compile(r"[^A-Za-z0-9_.:-]")


class ReplaySettings(Settings):
    """How a replay sends its clicks."""

    k: int = Field(default=20, ge=1, le=1000, description="Top-k asked per click.")
    timeout_s: float = Field(
        default=10.0, gt=0,
        description="A click answered later than this after its intended time is a timeout.")
    max_workers: int = Field(
        default=256, ge=1, description="Most worker threads (sessions in flight at once).")
    late_tolerance_ms: float = Field(
        default=1.0, ge=0,
        description="A click sent later than this after it could have been is a late start.")
    cpu_warn_fraction: float = Field(
        default=0.9, gt=0, le=1,
        description="Flag the replay when the process uses more than this share of the cores.")


class ClickSender(Protocol):
    """The two calls a replay makes (``bench.replay_client.SessionClient``); thread-safe."""

    def click(self, session_id: str, item: int, k: int) -> ClickAnswer: ...

    def delete(self, session_id: str) -> int: ...


@dataclass(frozen=True)
class ClickRecord:
    """One click as replayed. Times are ns from the replay's start (intended time 0)."""

    session: int  # index of the session in the trace
    session_id: str  # as sent to the server
    position: int  # 0 for the session's first click
    item: int
    intended_ns: int
    sent_ns: int
    done_ns: int
    http_status: int  # 0 when no answer came
    outcome: int  # bench.stats OK / ERROR / TIMEOUT
    error: str
    e2e_ms: float  # done - intended
    endpoint_ms: float  # Server-Timing "endpoint"; NaN when absent
    store_ms: float  # Server-Timing "store"; NaN when absent
    server_ms: float  # Server-Timing "total"; NaN when absent
    items: tuple[int, ...]  # top-k answered
    clicks: tuple[int, ...]  # the session as the server held it after this click
    queued: bool  # its intended time came before the session's previous answer
    late: bool


@dataclass
class ReplayResult:
    """Every click of a replay, and how the generator fared."""

    run_id: str
    records: list[ClickRecord]  # by session, then position
    sessions: int
    level: LevelResult  # the clicks as one open-loop level (``bench.report``)
    deletes_failed: int = 0
    threads: int = 0
    settings: ReplaySettings = field(default_factory=ReplaySettings)

    def frame(self) -> pd.DataFrame:
        """One row per click; ``items`` and ``clicks`` as lists."""
        rows = [asdict(r) for r in self.records]
        for row in rows:
            row["items"], row["clicks"] = list(row["items"]), list(row["clicks"])
        cols = list(ClickRecord.__dataclass_fields__)
        return pd.DataFrame(rows, columns=cols)


def new_run_id() -> str:
    """A fresh session-id prefix, e.g. ``replay-3f9c2a1b``."""
    return f"replay-{uuid.uuid4().hex[:8]}"


def wire_id(run_id: str, trace_id: str) -> str:
    """The session id sent for ``trace_id``: ``<run_id>-<trace_id>``, characters outside
    ``[A-Za-z0-9_.:-]`` as ``_``, at most 128 characters."""
    return _BAD_ID.sub("_", f"{run_id}-{trace_id}")[:128]


class _Worker:
    def __init__(self) -> None:
        self.slot: int | None = None
        self.wake = threading.Event()


class _Pool:
    """Sessions handed to workers as they come due; guarded by ``lock``."""

    def __init__(self, n: int, max_workers: int) -> None:
        self.lock = threading.Lock()
        self.n, self.max_workers = n, max_workers
        self.idle: list[_Worker] = []
        self.backlog: deque[int] = deque()
        self.workers = 0
        self.finished = 0
        self.all_done = threading.Event()
        if n == 0:
            self.all_done.set()

    def submit(self, i: int) -> bool:
        """Hand session ``i`` out; True when the caller must start a worker for it."""
        if self.idle:
            worker = self.idle.pop()
            worker.slot = i
            worker.wake.set()
            return False
        if self.workers < self.max_workers:
            self.workers += 1
            return True
        self.backlog.append(i)
        return False

    def next(self, worker: _Worker) -> int | None:
        """After a session: the next from the backlog, or None to go idle."""
        self.finished += 1
        if self.finished == self.n:
            self.all_done.set()
        if self.backlog:
            return self.backlog.popleft()
        worker.wake.clear()
        self.idle.append(worker)
        return None

    def stop(self) -> None:
        for worker in self.idle:
            worker.slot = None
            worker.wake.set()
        self.idle.clear()


def _outcome(answer: ClickAnswer, e2e_ns: int, timeout_ns: int) -> tuple[int, str]:
    if answer.timed_out:
        return TIMEOUT, answer.error
    if not answer.ok:
        return ERROR, answer.error or f"HTTP {answer.status}"
    if e2e_ns > timeout_ns:
        return TIMEOUT, "SlowerThanTimeoutFromIntended"
    return OK, ""


def replay(
    sender: ClickSender, trace: Trace, plan: Schedule, settings: ReplaySettings | None = None,
    *, run_id: str | None = None, clock: Clock = MONOTONIC,
) -> ReplayResult:
    """Send every click of ``trace`` through ``sender`` on ``plan`` (see the module docstring)."""
    s = settings or ReplaySettings()
    if len(plan.clicks_s) != len(trace.sessions) or any(
        len(c) != len(t.items) for c, t in zip(plan.clicks_s, trace.sessions, strict=False)
    ):
        raise ValueError("the schedule does not match the trace (one time per click of each "
                         "session): build it with bench.replay_schedule.schedule(trace, ...)")
    run_id = run_id or new_run_id()
    n = len(trace.sessions)
    started = LevelClock.start(clock)
    base = started.wall0_ns + LEAD_NS
    due = [[base + round(t * 1e9) for t in c] for c in plan.clicks_s]
    timeout_ns, late_ns = round(s.timeout_s * 1e9), round(s.late_tolerance_ms * 1e6)
    pool = _Pool(n, s.max_workers)
    out: list[list[ClickRecord]] = [[] for _ in range(n)]
    deletes_failed = [0]

    def run_session(i: int) -> None:
        sid = wire_id(run_id, trace.sessions[i].session_id)
        previous: int | None = None
        for pos, item in enumerate(trace.sessions[i].items):
            when = due[i][pos]
            clock.sleep((when - clock.now_ns()) / 1e9)
            sent = clock.now_ns()
            try:
                answer = sender.click(sid, item, s.k)
            except Exception as exc:  # every failure is a record, never a hung replay
                answer = ClickAnswer(0, error=f"{type(exc).__name__}: {exc}")
            done = clock.now_ns()
            outcome, error = _outcome(answer, done - when, timeout_ns)
            ready = when if previous is None else max(when, previous)
            out[i].append(ClickRecord(
                i, sid, pos, item, when - base, sent - base, done - base, answer.status,
                outcome, error, (done - when) / 1e6, answer.timing.get("endpoint", math.nan),
                answer.timing.get("store", math.nan), answer.timing.get("total", math.nan),
                answer.items, answer.clicks, previous is not None and previous > when,
                sent - ready > late_ns))
            previous = done
        try:
            deleted = sender.delete(sid) == 204
        except Exception:  # counted in deletes_failed
            deleted = False
        if not deleted:
            with pool.lock:
                deletes_failed[0] += 1

    def work(first: int) -> None:
        me, i = _Worker(), first
        while True:
            run_session(i)
            with pool.lock:
                following = pool.next(me)
            if following is None:
                clock.wait(me.wake, None)
                with pool.lock:
                    following, me.slot = me.slot, None
                if following is None:
                    return
            i = following

    for i in sorted(range(n), key=lambda j: due[j][0]):
        clock.sleep((due[i][0] - clock.now_ns()) / 1e9)
        with pool.lock:
            spawn, name = pool.submit(i), f"replay-{pool.workers}"
        if spawn:
            clock.spawn(functools.partial(work, i), name=name)
    clock.wait(pool.all_done, None)
    with pool.lock:
        pool.stop()
    records = [r for session in out for r in session]
    return ReplayResult(run_id, records, n, _level(records, base, started, plan, s),
                        deletes_failed[0], pool.workers, s)


def _level(records: list[ClickRecord], base: int, started: LevelClock, plan: Schedule,
           s: ReplaySettings) -> LevelResult:
    """The clicks as one open-loop level, at the intended click rate, window = the whole replay."""
    raw: list[Record] = [(base + r.intended_ns, base + r.sent_ns, base + r.done_ns, r.outcome,
                          r.error, False) for r in records]
    end = max((r.done_ns for r in records), default=0)
    rate = len(records) / plan.duration_s if plan.duration_s > 0 else float(len(records))
    late = sum(r.late for r in records)
    return finish("open", rate, raw, base, (base, base + end + 1), started,
                  LoadSettings(cpu_warn_fraction=s.cpu_warn_fraction), late=late)
