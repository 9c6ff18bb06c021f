"""The shipped locustfile: our payload mix as a closed loop, every request recorded to a file.

Run only by Locust (``locust -f bench/locustfile.py ...``, as ``bench.locust_run`` does), never
imported by the benchmark: ``import locust`` monkey-patches the whole process with gevent.

- Input: the mix file named by ``$NISER_LOCUST_MIX`` (``bench.locust_mix``): the request path,
  ``k``, the timeout and the bodies, each ``deployers.wire.encode_request``'s bytes for one batch of
  the pool, sent in our generator's cycle order (one counter per process, shared by its users).
- Users: ``FastHttpUser`` (geventhttpclient: keep-alive, the least CPU per request Locust offers),
  zero think time, one task that POSTs the next body and checks the answer has a ``predictions``
  row per session (a failure otherwise, as ``deployers.http.HttpInvoker`` would raise).
- Output: a Locust ``request`` event hook writes each request to ``$NISER_LOCUST_OUT/records-<host>-
  <pid>.tsv``: its end (on ``$NISER_LOCUST_CLOCK``'s clock at the hook), its start (end minus Locust's own
  ``response_time``), status, error class and pool index. A request still unanswered when Locust
  stops its user is written as an ``AbandonedInFlight`` timeout, and at test stop each process adds
  its CPU and wall time (``#cpu`` line).

Across machines, start the master and the workers with this same file and the same mix file on
every worker (README, "Load from Locust").
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.env import Environment

from bench.locust_mix import ABANDONED, CLOCKS, MIX_ENV, OUT_ENV, RecordWriter, clock_name, read_mix

MIX = read_mix(os.environ[MIX_ENV])
OK, ERROR, TIMEOUT = MIX.codes["ok"], MIX.codes["error"], MIX.codes["timeout"]
TIMEOUT_NS = int(MIX.timeout_s * 1e9)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
CLOCK = clock_name()
now_ns = CLOCKS[CLOCK]
OUT = RecordWriter(os.environ[OUT_ENV], CLOCK)

_counter = itertools.count()
_offset: int | None = None
_inflight: dict[int, tuple[int, int]] = {}  # id(user) -> (start ns, pool index)
_started: tuple[float, float] | None = None  # (process CPU s, monotonic s) at test start


def _next_index(environment: Environment) -> int:
    """The pool index of this process's next request (worker w of n starts at its share)."""
    global _offset
    if _offset is None:
        runner = environment.runner
        _offset = MIX.start(getattr(runner, "worker_index", 0) if runner is not None else 0)
    return (_offset + next(_counter)) % len(MIX.bodies)


def _error_class(exception: BaseException, response: Any) -> tuple[int, str]:
    """Status and error class of a failed request, named as ``bench.level.classify`` would."""
    code = getattr(response, "status_code", 0) or 0
    if code and not 200 <= code < 300:
        return ERROR, f"HttpStatus({code})"
    name = type(exception).__name__
    if isinstance(exception, TimeoutError) or "timeout" in name.lower():
        return TIMEOUT, name
    return ERROR, str(exception) if name == "CatchResponseError" else name


@events.request.add_listener
def _record(response_time: float, context: dict[str, Any], exception: BaseException | None,
            response: Any = None, **_: Any) -> None:
    end = now_ns()
    start = end - round(response_time * 1e6)
    if exception is None:
        status, error = (OK, "") if end - start <= TIMEOUT_NS else (TIMEOUT, "SlowerThanTimeout")
    else:
        status, error = _error_class(exception, response)
    OUT.request(start, end, status, error, int(context.get("batch", -1)))


@events.test_start.add_listener
def _test_start(**_: Any) -> None:
    global _started
    _started = (time.process_time(), time.monotonic())


@events.test_stop.add_listener
def _test_stop(**_: Any) -> None:
    now = now_ns()
    for start, index in list(_inflight.values()):
        OUT.request(start, now, TIMEOUT, ABANDONED, index)
    _inflight.clear()
    if _started is not None:
        OUT.cpu(time.process_time() - _started[0], time.monotonic() - _started[1])
    OUT.close()


@events.quitting.add_listener
def _quitting(**_: Any) -> None:
    OUT.close()


class Scorer(FastHttpUser):
    """One closed-loop user: the next body of the mix, back to back, no think time."""

    wait_time = constant(0)
    network_timeout = MIX.timeout_s
    connection_timeout = MIX.timeout_s

    @task
    def score(self) -> None:
        index = _next_index(self.environment)
        key = id(self)
        _inflight[key] = (now_ns(), index)
        with self.client.post(MIX.path, data=MIX.bodies[index], headers=HEADERS,
                              catch_response=True, context={"batch": index}) as resp:
            if resp.status_code is not None and 200 <= resp.status_code < 300:
                try:
                    rows = json.loads(resp.content or b"null").get("predictions")
                except (ValueError, AttributeError):
                    rows = None
                if not isinstance(rows, list) or len(rows) != MIX.sessions[index]:
                    resp.failure("BadAnswer")
        del _inflight[key]
