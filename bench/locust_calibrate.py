"""Locust's calibration beside ours, in the same run: the honesty check of ``bench.calibrate``
with Locust as the load generator.

``compare`` starts one ``bench.stub_server.StubServer`` and measures every user count first with
our generator (``bench.calibrate.measure``, one level) and then with Locust
(``bench.locust_run.run_level``) for each process count given, so that both see the same machine
at nearly the same moment (this machine is shared and noisy: a baseline from another run says
little). A Locust configuration passes when every level has ``0 <= p50 - delay <= bound_ms``
(default ``BOUND_MS``, 2 ms) and no failed request; ours is held to ``bench.calibrate.BOUND_MS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench import calibrate as ours
from bench.locust_run import run_level
from bench.stub_server import StubServer
from deployers.http import HttpInvoker

DEFAULT_USERS = [1, 2, 4, 8, 16, 32]
BOUND_MS = 2.0


@dataclass(frozen=True)
class Comparison:
    """One row per (generator, user count); ``verdicts`` maps each generator label (``niser``,
    ``locust x1``, ``locust x2`` ...) to whether all its levels met its bound."""

    table: pd.DataFrame
    delay_ms: float
    bounds: dict[str, float]
    verdicts: dict[str, bool]

    @property
    def passed(self) -> bool:
        """Whether every Locust configuration met its bound at every level."""
        return all(v for k, v in self.verdicts.items() if k.startswith("locust"))


def label(processes: int) -> str:
    return f"locust x{processes}"


def compare(delay_ms: float = 16.0, users: Sequence[int] | None = None,
            processes: Sequence[int] = (1,), warmup_s: float = 1.0, duration_s: float = 3.0,
            bound_ms: float = BOUND_MS) -> Comparison:
    """Our generator and Locust (once per entry of ``processes``) against one stub server, level
    by level; see the module docstring."""
    levels = list(users or DEFAULT_USERS)
    if not levels or any(p < 1 for p in processes) or not processes:
        raise ValueError(f"need user counts and process counts >= 1, got {levels}, "
                         f"{list(processes)}")
    settings = ours.settings(warmup_s, duration_s)
    batches = ours.stub_payloads().batches
    bounds = {"niser": ours.BOUND_MS} | {label(p): bound_ms for p in processes}
    rows = []
    with StubServer(delay_ms) as server:
        invoker = HttpInvoker(server.url, timeout_s=settings.timeout_s)
        for n in levels:
            cal = ours.measure(invoker, delay_ms, [n], warmup_s, duration_s)
            rows += [{"generator": "niser", **r} for r in cal.table.to_dict("records")]
            for p in processes:
                lv = run_level(server.url, batches, n, settings, processes=p)
                rows.append({"generator": label(p),
                             **ours.row(lv, lv.stats(), delay_ms, bound_ms)})
        invoker.close()
    table = pd.DataFrame(rows)
    table.insert(table.columns.get_loc("p50_minus_delay_ms") + 1, "p95_minus_delay_ms",
                 table["p95_ms"] - delay_ms)
    verdicts = {g: bool(len(t) == len(levels) and t["ok"].all())
                for g, t in table.groupby("generator", sort=False)}
    return Comparison(table, delay_ms, bounds, verdicts)


def format_comparison(c: Comparison) -> str:
    """The table as fixed-width text, then one verdict line per generator (PASS or FAIL)."""
    t = c.table.copy()
    for col in ("p50_ms", "p95_ms", "p99_ms", "p50_minus_delay_ms", "p95_minus_delay_ms"):
        t[col] = t[col].map(lambda v: f"{v:.3f}")
    t["throughput_rps"] = t["throughput_rps"].map(lambda v: f"{v:.0f}")
    t["generator_cpu_pct"] = t["generator_cpu_pct"].map(lambda v: f"{v:.0f}")
    lines = [f"stub delay {c.delay_ms:g} ms; same run, level by level",
             t.to_string(index=False)]
    lines += [f"{g}: {'PASS' if ok else 'FAIL'} (0 <= p50 - delay <= {c.bounds[g]:g} ms, "
              "no failed request)" for g, ok in c.verdicts.items()]
    return "\n".join(lines)
