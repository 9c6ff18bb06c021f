"""The replay's baseline: the same clicks sent straight to the deployment, no session manager.

``DirectSender`` is a ``bench.replay.ClickSender`` that keeps each session itself (the newest
``max_clicks`` clicks, as the session server does) and calls the deployment's invoker with the
session so far. Replaying the same trace on the same schedule through it and through the session
server, in the same run and with the same generator, gives what the session manager *adds* over
calling the endpoint directly: the generator's own delays are in both and cancel.
"""

from __future__ import annotations

import threading
import time

from bench.replay_client import ClickAnswer
from deployers.base import InvocationError, Invoker

MAX_ERROR_CHARS = 300


class DirectSender:
    """Clicks to ``invoker`` directly, sessions kept in this process (thread-safe)."""

    def __init__(self, invoker: Invoker, max_clicks: int = 50) -> None:
        if max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {max_clicks!r}")
        self.invoker = invoker
        self.max_clicks = max_clicks
        self._sessions: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def click(self, session_id: str, item: int, k: int) -> ClickAnswer:
        with self._lock:
            clicks = self._sessions.setdefault(session_id, [])
            clicks.append(item)
            del clicks[:-self.max_clicks]
            sent = list(clicks)
        t0 = time.perf_counter()
        try:
            prediction = self.invoker([sent], k)
        except InvocationError as exc:
            return ClickAnswer(exc.status or 0, clicks=tuple(sent),
                               error=str(exc)[:MAX_ERROR_CHARS])
        ms = (time.perf_counter() - t0) * 1e3
        return ClickAnswer(200, tuple(prediction.items[0]), tuple(sent),
                           {"endpoint": ms, "total": ms})

    def delete(self, session_id: str) -> int:
        with self._lock:
            return 204 if self._sessions.pop(session_id, None) is not None else 404
