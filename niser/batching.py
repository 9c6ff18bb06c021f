"""Opportunistic batching of concurrent calls into one model call, with no waiting window.

MLflow's scoring server runs each request's ``predict`` on a thread of its own
(``asyncio.to_thread``), so under load several ``predict`` calls are in flight at once in one
worker, each scoring a session or two against every item. ``Coalescer`` merges them:

- A call that finds the model idle runs at once, alone: nothing waits for company, so latency at
  low load is the unbatched one.
- Calls that arrive while a batch runs queue up; when it ends, one of the waiting callers runs
  the queue (oldest first, up to ``max_sessions`` sessions; a call larger than that runs alone)
  as the next batch, and so on. The thread that runs a batch is always one of its callers'.
- Every caller gets exactly its own results, in its own order: a batch is one ``run`` per
  distinct ``k`` among its calls (so a caller's answer is what ``run(its sessions, its k)``
  ranks, up to float ties), split back by the callers' session counts.
- A ``run`` that raises fails the calls of that ``run`` only, each with that exception; the
  others of the batch, and later batches, are unaffected. Validation happens before a call gets
  here (in the caller's own thread), so one bad request never reaches a batch.

``stats`` counts batches, calls and sessions (the batch sizes reached).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")
Run = Callable[[list[list[int]], int], Sequence[R]]


@dataclass
class _Call(Generic[R]):
    sessions: list[list[int]]
    k: int
    done: bool = False
    results: Sequence[R] = ()
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Batches run and the calls and sessions they held (since the coalescer was made)."""

    batches: int = 0
    calls: int = 0
    sessions: int = 0
    largest: int = 0  # sessions in the largest batch


@dataclass
class Coalescer(Generic[R]):
    """Merges concurrent ``__call__``s into batches of ``run`` (see the module docstring)."""

    run: Run[R]
    max_sessions: int = 64
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        if isinstance(self.max_sessions, bool) or not isinstance(self.max_sessions, int) \
                or self.max_sessions < 1:
            raise ValueError(f"max_sessions must be an integer >= 1, got {self.max_sessions!r}")
        self._cond = threading.Condition()
        self._queue: list[_Call[R]] = []
        self._busy = False

    def __call__(self, sessions: list[list[int]], k: int) -> list[R]:
        """``run(sessions, k)``, possibly as part of a batch with other callers' sessions."""
        call: _Call[R] = _Call(sessions, k)
        with self._cond:
            self._queue.append(call)
            while True:
                while self._busy and not call.done:
                    self._cond.wait()
                if call.done:
                    break
                batch = self._take()
                self._busy = True
                self._cond.release()
                try:
                    self._run_batch(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    for c in batch:
                        c.done = True
                    self._cond.notify_all()
        if call.error is not None:
            raise call.error
        return list(call.results)

    @property
    def queued(self) -> int:
        """Calls waiting for a batch (the running batch's not counted)."""
        with self._cond:
            return len(self._queue)

    def _take(self) -> list[_Call[R]]:
        """The oldest queued calls that fit in ``max_sessions`` (at least one). Lock held."""
        taken, size = 0, 0
        for c in self._queue:
            if taken and size + len(c.sessions) > self.max_sessions:
                break
            taken += 1
            size += len(c.sessions)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        st = self.stats
        st.batches += 1
        st.calls += taken
        st.sessions += size
        st.largest = max(st.largest, size)
        return batch

    def _run_batch(self, batch: list[_Call[R]]) -> None:
        by_k: dict[int, list[_Call[R]]] = {}
        for c in batch:
            by_k.setdefault(c.k, []).append(c)
        for k, calls in by_k.items():
            merged = [s for c in calls for s in c.sessions]
            try:
                results = self.run(merged, k)
                if len(results) != len(merged):
                    raise RuntimeError(f"the model answered {len(results)} rows for "
                                       f"{len(merged)} sessions")
            except BaseException as exc:
                for c in calls:
                    c.error = exc
                continue
            at = 0
            for c in calls:
                c.results = results[at:at + len(c.sessions)]
                at += len(c.sessions)


# How a served model batches: ``model_config`` at log time (``niser.registry.log_recommender``),
# overridden at serve time by the environment of the scoring server.
ENV_BATCHING = "NISER_BATCHING"  # 1/true/on or 0/false/off
ENV_MAX_BATCH_SESSIONS = "NISER_MAX_BATCH_SESSIONS"
DEFAULT_BATCHING = True
DEFAULT_MAX_BATCH_SESSIONS = 64
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


@dataclass(frozen=True)
class BatchSettings:
    """Whether concurrent predicts are merged, and the most sessions one batch holds."""

    enabled: bool = DEFAULT_BATCHING
    max_sessions: int = DEFAULT_MAX_BATCH_SESSIONS

    def model_config(self) -> dict[str, object]:
        """These settings as the ``model_config`` that ``from_config`` reads back."""
        return {"batching": self.enabled, "max_batch_sessions": self.max_sessions}


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError(f"{where}: {value!r} is not a switch; use one of {', '.join(_ON + _OFF)}")


def _count(value: object, where: str) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise ValueError(f"{where}: {value!r} must be an integer in 1..10000")
    return int(text)


def from_config(model_config: dict[str, object] | None,
                environ: dict[str, str] | None = None) -> BatchSettings:
    """The settings of ``model_config`` (keys ``batching``, ``max_batch_sessions``; defaults for
    absent ones), each overridden by ``NISER_BATCHING`` / ``NISER_MAX_BATCH_SESSIONS`` when set
    in ``environ``. A malformed value raises ``ValueError`` naming its key or variable."""
    config = dict(model_config or {})
    env = environ or {}
    enabled = _flag(config.get("batching", DEFAULT_BATCHING), "model_config 'batching'")
    size = _count(config.get("max_batch_sessions", DEFAULT_MAX_BATCH_SESSIONS),
                  "model_config 'max_batch_sessions'")
    if env.get(ENV_BATCHING, "").strip():
        enabled = _flag(env[ENV_BATCHING], ENV_BATCHING)
    if env.get(ENV_MAX_BATCH_SESSIONS, "").strip():
        size = _count(env[ENV_MAX_BATCH_SESSIONS], ENV_MAX_BATCH_SESSIONS)
    return BatchSettings(enabled, size)

