"""The equality check of a replay: did the session server recommend what the endpoint does?

For every click the server answered (HTTP 200), the expected prefix is the session's clicks up to
and including this one, the last ``max_clicks`` of them (what the server sends to the model). The
click is a mismatch when the server says it held other clicks, or when its top-k items differ
from those the deployment's invoker returns, called directly with that one prefix. A direct call
that fails is counted in ``direct_errors``, not as a mismatch. Clicks the server failed are not
compared (``skipped``). The direct calls are made after the replay, one session per request, as
the server sends them, so they neither disturb its timing nor meet a different batch shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.replay import ReplayResult
from bench.replay_trace import Trace
from deployers.base import Invoker


@dataclass(frozen=True)
class Mismatch:
    """One click whose answer differs from the endpoint's."""

    session_id: str
    position: int
    prefix: tuple[int, ...]
    server: tuple[int, ...]
    direct: tuple[int, ...]
    why: str

    def describe(self) -> str:
        return (f"{self.session_id} click {self.position}: {self.why}; prefix "
                f"{list(self.prefix)[-5:]}, server {list(self.server)[:5]}, direct "
                f"{list(self.direct)[:5]}")


@dataclass(frozen=True)
class CheckResult:
    """How many clicks were compared, and the first mismatches."""

    checked: int
    mismatches: int
    skipped: int
    direct_errors: int
    first: list[Mismatch] = field(default_factory=list)
    first_error: str = ""


def check(result: ReplayResult, trace: Trace, invoker: Invoker, *, k: int = 20,
          max_clicks: int = 50, keep: int = 5) -> CheckResult:
    """Compare every answered click of ``result`` with ``invoker`` (see the module docstring);
    ``keep`` mismatches are kept for the report."""
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    checked = mismatches = skipped = direct_errors = 0
    first: list[Mismatch] = []
    first_error = ""
    cache: dict[tuple[int, ...], tuple[int, ...]] = {}
    for r in result.records:
        if r.http_status != 200 or r.error:
            skipped += 1
            continue
        prefix = trace.sessions[r.session].items[: r.position + 1][-max_clicks:]
        if prefix not in cache:
            try:
                cache[prefix] = tuple(invoker([list(prefix)], k).items[0])
            except Exception as exc:  # counted and reported, never stops the check
                direct_errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
        direct = cache[prefix]
        checked += 1
        why = ""
        if r.clicks and r.clicks != prefix:
            why = f"the server held {len(r.clicks)} other clicks"
        elif r.items != direct:
            why = "different top-k items"
        if why:
            mismatches += 1
            if len(first) < keep:
                first.append(Mismatch(r.session_id, r.position, prefix, r.items, direct, why))
    return CheckResult(checked, mismatches, skipped, direct_errors, first, first_error)
