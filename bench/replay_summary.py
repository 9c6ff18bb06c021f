"""The figures of one replay, from its click records. Pure functions.

Definitions (on top of ``bench.stats``, whose rules give the end-to-end figures):

- **end-to-end** latency of a click: answer time minus its *intended* send time. Its p50/p95/p99
  and ``throughput_rps`` are ``bench.stats.summarize`` over the whole replay (window: from the
  first intended send to the last answer), so timeouts count in the tail.
- **endpoint** latency: the session server's ``Server-Timing`` ``endpoint`` duration (the
  deployer's invoker call only), over the successful clicks that report it.
- **overhead** of the session manager, per successful click reporting it: end-to-end minus
  endpoint (the store, the handler, HTTP and any queueing behind the session's previous click).
- **direct** (when a baseline was replayed, ``bench.replay_direct``): the end-to-end figures of
  the same schedule sent straight to the deployment; the manager **adds** the difference of the
  two p50s (and p95s), generator delays cancelling. Its **own overhead** is the p50 of
  end-to-end minus endpoint through it, less the same p50 of the baseline (the generator's own
  time around a call): the endpoint's time is taken out click by click, so a busier or quieter
  endpoint in one of the two replays does not move it.
- **errors**: clicks that did not succeed (failures and timeouts), counted by cause in
  ``errors_by_status``: the HTTP status (``"502"``), ``"timeout"``, ``"bad body"`` (a 200 whose
  body is not the API's), or the transport error's class (``"ConnectionRefusedError"``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from bench.provenance import Provenance, describe
from bench.replay import ClickRecord, ReplayResult
from bench.rounding import fmt, round_metric
from bench.stats import OK, TIMEOUT


@dataclass(frozen=True)
class ReplaySummary:
    """What one replay measured."""

    clicks: int
    sessions: int
    ok: int
    errors: int
    errors_by_status: dict[str, int]
    e2e_p50_ms: float
    e2e_p95_ms: float
    e2e_p99_ms: float
    endpoint_p50_ms: float
    endpoint_p95_ms: float
    endpoint_p99_ms: float
    overhead_p50_ms: float
    overhead_p95_ms: float
    throughput_rps: float
    late_starts: int
    queued_clicks: int
    deletes_failed: int
    mismatches: int | None = None  # None: not checked
    notes: list[str] = field(default_factory=list)
    direct_p50_ms: float = math.nan  # NaN: no baseline replayed
    direct_p95_ms: float = math.nan
    direct_errors: int = 0
    direct_overhead_p50_ms: float = math.nan  # the generator's own share of "overhead"

    @property
    def adds_p50_ms(self) -> float:
        """What the session manager adds to the p50 over calling the deployment directly."""
        return self.e2e_p50_ms - self.direct_p50_ms

    @property
    def adds_p95_ms(self) -> float:
        return self.e2e_p95_ms - self.direct_p95_ms

    @property
    def own_overhead_p50_ms(self) -> float:
        """The session manager's own time per click (p50 of end-to-end minus endpoint), less
        the same figure of the baseline (what the generator itself adds around a call)."""
        return self.overhead_p50_ms - self.direct_overhead_p50_ms


def with_baseline(s: ReplaySummary, direct: ReplayResult) -> ReplaySummary:
    """``s`` with the end-to-end figures of the baseline replay ``direct``."""
    st = direct.level.stats()
    base = summarize_replay(direct)
    return replace(s, direct_p50_ms=st.p50_ms, direct_p95_ms=st.p95_ms,
                   direct_errors=st.errors + st.timeouts,
                   direct_overhead_p50_ms=base.overhead_p50_ms)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def cause(r: ClickRecord) -> str:
    """Why a click failed, as ``errors_by_status`` counts it."""
    if r.outcome == TIMEOUT:
        return "timeout"
    if r.http_status == 200:
        return "bad body"  # answered 200 with a body that is not the API's
    if r.http_status:
        return str(r.http_status)
    return r.error.split(":", 1)[0] or "error"


def summarize_replay(result: ReplayResult, mismatches: int | None = None) -> ReplaySummary:
    """The figures of ``result`` (see the module docstring)."""
    st = result.level.stats()
    good = [r for r in result.records if r.outcome == OK and not math.isnan(r.endpoint_ms)]
    endpoint = [r.endpoint_ms for r in good]
    overhead = [r.e2e_ms - r.endpoint_ms for r in good]
    failed = Counter(cause(r) for r in result.records if r.outcome != OK)
    return ReplaySummary(
        clicks=len(result.records), sessions=result.sessions, ok=st.ok,
        errors=st.errors + st.timeouts, errors_by_status=dict(sorted(failed.items())),
        e2e_p50_ms=st.p50_ms, e2e_p95_ms=st.p95_ms, e2e_p99_ms=st.p99_ms,
        endpoint_p50_ms=_pct(endpoint, 50), endpoint_p95_ms=_pct(endpoint, 95),
        endpoint_p99_ms=_pct(endpoint, 99), overhead_p50_ms=_pct(overhead, 50),
        overhead_p95_ms=_pct(overhead, 95), throughput_rps=st.throughput_rps,
        late_starts=result.level.late_starts, queued_clicks=sum(r.queued for r in result.records),
        deletes_failed=result.deletes_failed, mismatches=mismatches,
    )


def replay_metrics(s: ReplaySummary) -> dict[str, float]:
    """The replay's own summary metrics for MLflow, rounded (``bench.rounding``), NaN left out.
    The end-to-end latencies are logged as a benchmark level's (``bench.report``)."""
    vals: dict[str, float] = {
        "manager_overhead_p50_ms": s.overhead_p50_ms, "manager_overhead_p95_ms": s.overhead_p95_ms,
        "endpoint_latency_p50_ms": s.endpoint_p50_ms, "endpoint_latency_p95_ms": s.endpoint_p95_ms,
        "endpoint_latency_p99_ms": s.endpoint_p99_ms, "errors": s.errors, "clicks": s.clicks,
        "sessions": s.sessions, "queued_clicks": s.queued_clicks,
        "deletes_failed": s.deletes_failed,
    }
    if s.mismatches is not None:
        vals["mismatches"] = s.mismatches
    if not math.isnan(s.direct_p50_ms):
        vals.update({"direct_latency_p50_ms": s.direct_p50_ms,
                     "direct_latency_p95_ms": s.direct_p95_ms, "direct_errors": s.direct_errors,
                     "manager_adds_p50_ms": s.adds_p50_ms, "manager_adds_p95_ms": s.adds_p95_ms,
                     "direct_overhead_p50_ms": s.direct_overhead_p50_ms,
                     "manager_own_overhead_p50_ms": s.own_overhead_p50_ms})
    return {k: round_metric(k, float(v)) for k, v in vals.items() if not math.isnan(float(v))}


def format_summary(s: ReplaySummary, provenance: Provenance) -> str:
    """A short table for people, headed by where its figures come from."""
    errors = ", ".join(f"{k}: {v}" for k, v in s.errors_by_status.items()) or "none"
    rows = [
        ("figures", describe(provenance)),
        ("sessions / clicks", f"{s.sessions:,} / {s.clicks:,}"),
        ("errors", f"{s.errors:,} ({errors})"),
        ("end-to-end p50 / p95 / p99 ms",
         f"{fmt(s.e2e_p50_ms)} / {fmt(s.e2e_p95_ms)} / {fmt(s.e2e_p99_ms)}"),
        ("endpoint p50 / p95 / p99 ms",
         f"{fmt(s.endpoint_p50_ms)} / {fmt(s.endpoint_p95_ms)} / {fmt(s.endpoint_p99_ms)}"),
        ("manager overhead p50 / p95 ms", f"{fmt(s.overhead_p50_ms)} / {fmt(s.overhead_p95_ms)}"),
        *([] if math.isnan(s.direct_p50_ms) else [
            ("direct to the endpoint p50 / p95 ms",
             f"{fmt(s.direct_p50_ms)} / {fmt(s.direct_p95_ms)} ({s.direct_errors:,} errors)"),
            ("manager adds p50 / p95 ms", f"{fmt(s.adds_p50_ms)} / {fmt(s.adds_p95_ms)}"),
            ("generator's own overhead p50 ms", fmt(s.direct_overhead_p50_ms)),
            ("manager's own overhead p50 ms", fmt(s.own_overhead_p50_ms))]),
        ("throughput (clicks/s)", fmt(s.throughput_rps)),
        ("late starts / queued clicks", f"{s.late_starts:,} / {s.queued_clicks:,}"),
        ("sessions not deleted", f"{s.deletes_failed:,}"),
        ("mismatches", "not checked" if s.mismatches is None else f"{s.mismatches:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{k:<{width}}  {v}" for k, v in rows] + s.notes)
