"""How wrong the performance model is on this machine: fit on some measured shapes, predict the
others, compare. Pure functions over measurements (``bench.predict_measure`` takes them).

Definitions (what ``niser-mlops predict-check`` prints):

- **Mean latency / p95 error** of a held-out shape: the mean absolute percentage error (MAPE)
  of the predicted mean / p95 over the measured concurrency levels (1..16 where the shape holds
  them). **Saturation throughput error**: |predicted - measured| / measured of the highest
  throughput of the shape's levels. The summary line averages over the held-out shapes.
- Server shapes are predicted by ``perfmodel.fit_server`` from the fitted server shapes, on the
  host those shapes saw (``Host`` from their CPU figures: the stand-in's and the load
  generator's CPU per request and the rest of the machine's use), since the held-out shapes are
  measured on this same machine beside the generator. Lambda sizes are predicted by
  ``perfmodel.fit_lambda`` from the fitted sizes' warm billed durations, on the host and under
  the invoke front's ceiling those sizes saw.
- **Cheapest choice agreement**: over a grid of (p95 objective, request rate) cells, the share
  of cells where the cheapest shape that holds the objective is the same when the held-out
  shapes' figures are predicted as when they are measured (fitted shapes are measured in both).
  An instance shape holds a rate with ``ceil(rate / X)`` instances, ``X`` the highest
  throughput of its levels with p95 within the objective, priced at ``cpus x instances`` vCPUs
  of the price table's ``ml.c5.large`` vCPU-hour; a Lambda size holds it when its highest p95
  is within the objective, priced by ``bench.cost.lambda_cost_per_hour`` at its billed duration.
  Cells that no shape holds count as agreeing when neither side finds one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from bench import perfmodel as pm
from bench import perfmodel_open as po
from bench.breakeven import instances_needed
from bench.cost import lambda_cost_per_hour
from bench.prices import LambdaPrices

Role = Literal["fit", "held-out"]

SLO_GRID_MS: tuple[float, ...] = (15, 20, 30, 40, 60, 100, 200)
RATE_GRID_RPS: tuple[float, ...] = (5, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class Measured:
    """One measured shape: a scoring server (``shape``) or a Lambda size (``memory_mb``)."""

    name: str
    role: Role
    levels: tuple[pm.Level, ...]
    host: pm.Host
    shape: pm.Shape | None = None
    memory_mb: int | None = None
    billed_ms: float | None = None
    duration_ms: float | None = None

    @property
    def is_lambda(self) -> bool:
        return self.memory_mb is not None

    @property
    def warm_ms(self) -> float | None:
        """The mean warm duration (the billed one, rounded up to the ms, where not recorded)."""
        return self.duration_ms if self.duration_ms is not None else self.billed_ms


def dumps(shapes: Sequence[Measured]) -> str:
    """The measurements as JSON (``loads`` reads them back), so a check can be re-run on them."""
    return json.dumps([asdict(m) for m in shapes], indent=1)


def loads(text: str) -> list[Measured]:
    """Measurements written by ``dumps``; ``ValueError`` naming what is wrong."""
    try:
        raw = json.loads(text)
        return [Measured(m["name"], m["role"], tuple(pm.Level(**lv) for lv in m["levels"]),
                         pm.Host(**m["host"]),
                         pm.Shape(**m["shape"]) if m.get("shape") else None,
                         m.get("memory_mb"), m.get("billed_ms"), m.get("duration_ms"))
                for m in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a predict-check measurement file: {exc}") from None


@dataclass(frozen=True)
class HeldOut:
    """A held-out shape: what was measured, what was predicted, and the errors."""

    measured: Measured
    predicted: tuple[pm.Level, ...]
    mape_mean: float
    mape_p95: float
    throughput_error: float
    note: str = ""

    def pairs(self) -> list[tuple[pm.Level, pm.Level]]:
        """``(measured, predicted)`` at every measured level that was predicted."""
        return level_pairs(self.measured.levels, self.predicted)


def level_pairs(measured: Sequence[pm.Level], predicted: Sequence[pm.Level]
                ) -> list[tuple[pm.Level, pm.Level]]:
    by_users = {lv.users: lv for lv in predicted}
    return [(lv, by_users[lv.users]) for lv in measured if lv.users in by_users]


@dataclass
class CheckResult:
    held_out: list[HeldOut]
    agreement: float
    cells: int
    held_out_picks: int
    sigma: float | None = None
    notes: list[str] = field(default_factory=list)
    lambda_law: po.LambdaModel | None = None  # the Lambda duration law fitted

    @property
    def mape_mean(self) -> float:
        return _avg([h.mape_mean for h in self.held_out])

    @property
    def mape_p95(self) -> float:
        return _avg([h.mape_p95 for h in self.held_out])

    @property
    def throughput_error(self) -> float:
        return _avg([h.throughput_error for h in self.held_out])

    def summary_line(self) -> str:
        return (f"prediction error: mean latency {self.mape_mean:.1f} %, p95 {self.mape_p95:.1f} %"
                f", saturation throughput {self.throughput_error:.1f} %, cheapest choice "
                f"agreement {100 * self.agreement:.0f} %")

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of a check (and of a benchmark run that cites it)."""
        out = {"prediction_mape_latency": self.mape_mean, "prediction_mape_p95": self.mape_p95,
               "prediction_mape_throughput": self.throughput_error,
               "prediction_cheapest_agreement": 100 * self.agreement}
        if self.sigma is not None:
            out["prediction_scaling_sigma"] = self.sigma
        if self.lambda_law is not None:
            law = self.lambda_law
            out |= {"prediction_lambda_a_ms": law.a, "prediction_lambda_b_ms": law.b,
                    "prediction_lambda_share_lo": law.lo, "prediction_lambda_share_hi": law.hi}
            if math.isfinite(law.ceiling_rps):
                out["prediction_lambda_ceiling_rps"] = law.ceiling_rps
        return out


def _avg(values: Sequence[float]) -> float:
    good = [v for v in values if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def shared_host(fitted: Sequence[Measured]) -> pm.Host:
    """The host the fitted shapes saw: the mean of their figures, but the least of their
    background CPU per request: what the request path itself costs the rest of the machine
    (the kernel's loopback TCP) is a floor, and other work that came and went while a shape
    was measured only adds to it, never takes away."""
    hosts = [m.host for m in fitted]
    per_request = [h.background_ms for h in hosts if h.background_ms is not None]
    return pm.Host(hosts[0].cores, _avg([h.background_cores for h in hosts]),
                   _avg([h.client_ms for h in hosts]), _avg([h.target_ms for h in hosts]),
                   min(per_request) if per_request else None)


def server_model(fitted: Sequence[Measured]) -> pm.ServerModel:
    curves = [pm.Curve(m.shape, m.levels) for m in fitted if m.shape is not None]
    return pm.fit_server(curves)


def lambda_model(fitted: Sequence[Measured]) -> po.LambdaModel:
    """Durations from the fitted sizes' warm durations (billed ones in files without them),
    the invoke overhead from their 1-user latencies, the tails from the largest size's levels
    (the least throttled: ``perfmodel`` module docstring), the invoke front's ceiling from the
    mean of their highest throughputs (``perfmodel_open`` module docstring)."""
    lams = [m for m in fitted if m.is_lambda and m.warm_ms is not None]
    if len(lams) < 2:
        raise ValueError(f"the Lambda model needs two fitted sizes with billed durations, got "
                         f"{[m.name for m in lams]}")
    overhead = _avg([min(m.levels, key=lambda lv: lv.users).mean_ms - (m.warm_ms or 0.0)
                     for m in lams])
    top = max(lams, key=lambda m: m.memory_mb or 0)
    tails = pm.fit_tails([(lv.users, lv.p50_ms / lv.mean_ms, lv.p95_ms / lv.mean_ms)
                          for lv in top.levels if lv.mean_ms > 0])
    ceiling = _avg([max(lv.throughput_rps for lv in m.levels) for m in lams])
    return po.fit_lambda([(m.memory_mb or 0, m.warm_ms or 0.0) for m in lams],
                         max(0.0, overhead), tails, ceiling)


def _errors(measured: Measured, predicted: Sequence[pm.Level], note: str = "") -> HeldOut:
    pairs = [(p, m) for m, p in level_pairs(measured.levels, predicted)]
    top_m = max(lv.throughput_rps for lv in measured.levels)
    top_p = max((p.throughput_rps for p, _ in pairs), default=math.nan)
    return HeldOut(measured, tuple(predicted),
                   pm.mape([p.mean_ms for p, _ in pairs], [m.mean_ms for _, m in pairs]),
                   pm.mape([p.p95_ms for p, _ in pairs], [m.p95_ms for _, m in pairs]),
                   100 * abs(top_p - top_m) / top_m if top_m > 0 else math.nan, note)


def predict_held_out(shapes: Sequence[Measured]
                     ) -> tuple[list[HeldOut], pm.ServerModel | None, po.LambdaModel | None]:
    """Fit on the ``fit`` shapes, predict every ``held-out`` one at its measured levels; the
    server and Lambda models fitted (``None`` without fitted shapes of their kind)."""
    fitted = [m for m in shapes if m.role == "fit"]
    out = []
    servers = [m for m in fitted if not m.is_lambda]
    model = server_model(servers) if servers else None
    host = shared_host(servers) if servers else None
    lam_fit = [m for m in fitted if m.is_lambda]
    lam = lambda_model(lam_fit) if lam_fit else None
    lam_host = shared_host(lam_fit) if lam_fit else None
    for m in shapes:
        if m.role != "held-out":
            continue
        users = [lv.users for lv in m.levels]
        if m.shape is not None and model is not None:
            out.append(_errors(m, model.predict(m.shape, users, host)))
        elif m.memory_mb is not None and lam is not None:
            note = "extrapolated beyond the fitted sizes" if lam.extrapolated(m.memory_mb) else ""
            out.append(_errors(m, lam.predict(m.memory_mb, users, host=lam_host), note))
    return out, model, lam


def _hourly_cost(m: Measured, levels: Sequence[pm.Level], slo_ms: float, rate: float,
                 vcpu_hour: float, lam_prices: LambdaPrices) -> float:
    if m.is_lambda:
        if not levels or max(lv.p95_ms for lv in levels) > slo_ms or m.billed_ms is None:
            return math.inf
        return lambda_cost_per_hour(rate, duration_ms=m.billed_ms, memory_mb=m.memory_mb or 0,
                                    prices=lam_prices)
    good = [lv for lv in levels if lv.p95_ms <= slo_ms]
    if not good or m.shape is None:
        return math.inf
    per_instance = max(lv.throughput_rps for lv in good) / m.shape.instances
    n = instances_needed(rate, per_instance) * m.shape.instances
    return n * m.shape.cpus * vcpu_hour


def cheapest_agreement(shapes: Sequence[Measured], held_out: Sequence[HeldOut],
                       vcpu_hour: float, lam_prices: LambdaPrices,
                       slos: Sequence[float] = SLO_GRID_MS, rates: Sequence[float] = RATE_GRID_RPS,
                       ) -> tuple[float, int, int]:
    """``(share of agreeing cells, cells, cells whose measured pick is a held-out shape)``."""
    predicted = {h.measured.name: h.predicted for h in held_out}
    agree = picks = 0
    for slo in slos:
        for rate in rates:
            def pick(use_prediction: bool, slo: float = slo, rate: float = rate) -> str | None:
                costs = {}
                for m in shapes:
                    levels = (predicted[m.name] if use_prediction and m.name in predicted
                              else m.levels)
                    costs[m.name] = _hourly_cost(m, levels, slo, rate, vcpu_hour, lam_prices)
                best = min(costs, key=lambda k: costs[k])
                return best if math.isfinite(costs[best]) else None
            truth, guess = pick(False), pick(True)
            agree += truth == guess
            picks += truth in predicted
    cells = len(slos) * len(rates)
    return agree / cells, cells, picks


def check(shapes: Sequence[Measured], vcpu_hour: float, lam_prices: LambdaPrices) -> CheckResult:
    """The whole validation (module docstring)."""
    held, model, law = predict_held_out(shapes)
    share, cells, picks = cheapest_agreement(shapes, held, vcpu_hour, lam_prices)
    return CheckResult(held, share, cells, picks, model.scaling.sigma if model else None,
                       lambda_law=law)


def table(result: CheckResult) -> str:
    """Per held-out shape and level: measured against predicted."""
    lines = ["meas: measured-local (a stand-in on this machine); pred: predicted (the model "
             "fitted on the other shapes)",
             f"{'held-out shape':<22} {'users':>5} {'mean ms':>15} {'p95 ms':>15} "
             f"{'req/s':>15}", f"{'':<22} {'':>5} {'meas / pred':>15} {'meas / pred':>15} "
             f"{'meas / pred':>15}"]
    for h in result.held_out:
        for lv, p in h.pairs():
            lines.append(f"{h.measured.name:<22} {lv.users:>5} {lv.mean_ms:>7.2f}/{p.mean_ms:<7.2f}"
                         f" {lv.p95_ms:>7.2f}/{p.p95_ms:<7.2f} {lv.throughput_rps:>7.1f}/"
                         f"{p.throughput_rps:<7.1f}")
        lines.append(f"{h.measured.name:<22} error: mean latency {h.mape_mean:.1f} %, p95 "
                     f"{h.mape_p95:.1f} %, saturation throughput {h.throughput_error:.1f} %"
                     + (f" ({h.note})" if h.note else ""))
    lines.append(f"cheapest choice: {result.cells} cells (p95 objective x request rate), "
                 f"{result.held_out_picks} of them won by a held-out shape when measured")
    return "\n".join(lines)
