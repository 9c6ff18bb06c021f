"""Cost of a deployment: pure functions over a price table (``bench/prices.py``).

Nothing here holds a price; every figure comes from the ``PriceTable`` passed in. All money is
USD. Free tiers, savings plans and taxes are ignored (list on-demand prices).

Promises:

- ``hourly_cost`` prices always-on capacity (SageMaker instances, local machines) per hour.
- ``cost_per_inference_at_load`` = price per hour / requests actually served per hour: the honest
  figure at the load that was offered. ``cost_per_inference_at_saturation`` = CostPerHour /
  (60 x MaxInvocations per minute): SageMaker Inference Recommender's figure, valid only when the
  capacity is kept saturated.
- ``lambda_bill`` = requests + duration (each invocation rounded UP to 1 ms) x GB + INIT
  duration x GB (billed at the on-demand duration rate) + provisioned concurrency (GB reserved for
  the whole period) + the lower per-GB-s rate for the duration run on provisioned concurrency.
- ``serverless_bill`` = SageMaker Serverless Inference duration (rounded up to 1 ms) x GB of
  configured memory + data processed in and out (+ provisioned concurrency when priced).
- Bad input (negative counts, memory outside the service's range, unknown architecture, a price
  the table lacks) raises ``ValueError`` / ``PriceError`` naming the value and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.prices import Architecture, LambdaPrices, PriceError, PriceTable, ServerlessPrices
from deployers.base import CostDrivers, CostKind

ALWAYS_ON: frozenset[CostKind] = frozenset({"instance", "local", "inprocess"})
"""Cost kinds billed per hour whether used or not (priced by ``hourly_cost``)."""

SECONDS_PER_HOUR = 3600.0
HOURS_PER_MONTH = 730.0  # AWS's billing convention for "a month" of always-on capacity
MB_PER_GB = 1024.0
BYTES_PER_GB = 1024.0**3
LAMBDA_MEMORY_MB = (128, 10240)
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)


def _positive(name: str, value: float, allow_zero: bool = True) -> None:
    if value < 0 or (not allow_zero and value == 0) or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def is_always_on(kind: CostKind) -> bool:
    """True for capacity billed per hour whether used or not (instances, local machines)."""
    return kind in ALWAYS_ON


def hourly_cost(drivers: CostDrivers, table: PriceTable, region: str | None = None) -> float:
    """USD per hour of always-on capacity: instances x hosting price, or local machines."""
    count = drivers.instance_count if drivers.instance_count is not None else 1
    _positive("instance_count", count)
    if drivers.kind == "instance":
        if not drivers.instance_type:
            raise ValueError("an 'instance' deployment needs CostDrivers.instance_type, got None")
        return count * table.instance_hourly(drivers.instance_type, region).usd
    if is_always_on(drivers.kind):
        local = table.local
        if local.per_machine_hour is not None:
            return count * local.per_machine_hour.usd
        if local.per_core_hour is not None:
            if drivers.cpus is None:
                raise ValueError("a per-core local price needs CostDrivers.cpus (cores per "
                                 "instance), got None; set cpus or a per-machine price")
            return count * drivers.cpus * local.per_core_hour.usd
        raise PriceError(
            "local deployments have no AWS price: set local.per_core_hour or "
            "local.per_machine_hour in the price table (or PriceTable.with_local(...))")
    raise ValueError(f"a {drivers.kind!r} deployment is billed per request, not per hour; "
                     "use lambda_bill or serverless_bill")


def training_cost(billable_seconds: float, instance_type: str, table: PriceTable,
                  region: str | None = None) -> float:
    """USD of a SageMaker training job: billable seconds (instance count and spot savings
    already in them, as SageMaker reports ``BillableTimeInSeconds``) x the training price per
    instance-hour / 3,600."""
    _positive("billable_seconds", billable_seconds)
    return billable_seconds * table.training_hourly(instance_type, region).usd / SECONDS_PER_HOUR


def cost_per_inference_at_load(cost_per_hour: float, served_rps: float) -> float:
    """USD per inference at the offered load: price per hour / requests served per hour."""
    _positive("cost_per_hour", cost_per_hour)
    _positive("served_rps", served_rps, allow_zero=False)
    return cost_per_hour / (served_rps * SECONDS_PER_HOUR)


def cost_per_inference_at_saturation(cost_per_hour: float,
                                     max_invocations_per_minute: float) -> float:
    """Inference Recommender's figure: CostPerHour / (60 x MaxInvocations per minute)."""
    _positive("cost_per_hour", cost_per_hour)
    _positive("max_invocations_per_minute", max_invocations_per_minute, allow_zero=False)
    return cost_per_hour / (60.0 * max_invocations_per_minute)


def billed_ms(durations_ms: float | Sequence[float], requests: int) -> float:
    """Total billed milliseconds: each invocation's duration rounded up to a whole ms.

    A single number is taken as every invocation's duration; a sequence must hold one duration
    per request.
    """
    if isinstance(durations_ms, (int, float)):
        _positive("duration_ms", durations_ms)
        return float(math.ceil(durations_ms)) * requests
    if len(durations_ms) != requests:
        raise ValueError(f"got {len(durations_ms)} durations for {requests} requests; pass one "
                         "duration per request or a single typical duration")
    for d in durations_ms:
        _positive("duration_ms", d)
    return float(sum(math.ceil(d) for d in durations_ms))


@dataclass(frozen=True)
class LambdaBill:
    """One Lambda bill, line by line (USD)."""

    requests: int
    requests_usd: float
    duration_usd: float
    init_usd: float
    provisioned_usd: float
    provisioned_duration_usd: float

    @property
    def total_usd(self) -> float:
        """Sum of every line."""
        return (self.requests_usd + self.duration_usd + self.init_usd + self.provisioned_usd
                + self.provisioned_duration_usd)

    @property
    def per_million_usd(self) -> float:
        """Total per 1M requests (``inf`` when nothing was served but something was paid)."""
        return cost_per_million(self.total_usd, self.requests)


def cost_per_million(total_usd: float, requests: int) -> float:
    """USD per 1M requests."""
    if requests <= 0:
        return math.inf if total_usd > 0 else 0.0
    return total_usd / requests * 1e6


def _arch(architecture: str | None) -> Architecture:
    arch = architecture or "x86_64"
    if arch not in ("x86_64", "arm64"):
        raise ValueError(f"architecture must be 'x86_64' or 'arm64', got {architecture!r}")
    return arch  # type: ignore[return-value]


def _share(name: str, share: float, provisioned_concurrency: int) -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {share!r}")
    if share > 0 and provisioned_concurrency <= 0:
        raise ValueError(f"{name}={share} needs provisioned_concurrency > 0")


def lambda_bill(
    *, requests: int, duration_ms: float | Sequence[float], memory_mb: int,
    prices: LambdaPrices, architecture: str | None = "x86_64",
    init_ms: Sequence[float] = (), provisioned_concurrency: int = 0, period_s: float = 0.0,
    provisioned_share: float = 0.0,
) -> LambdaBill:
    """The Lambda bill for ``requests`` invocations.

    ``init_ms``: INIT duration of each on-demand cold start (billed like duration since
    2025-08-01). ``provisioned_concurrency`` environments are paid for ``period_s`` seconds whether
    used or not; ``provisioned_share`` is the fraction of the billed duration that ran on them
    (billed at the lower provisioned-duration rate; the rest at the on-demand rate).
    """
    _positive("requests", requests)
    lo, hi = LAMBDA_MEMORY_MB
    if not lo <= memory_mb <= hi:
        raise ValueError(f"Lambda memory_mb must be within {lo}..{hi}, got {memory_mb!r}")
    _positive("provisioned_concurrency", provisioned_concurrency)
    _positive("period_s", period_s)
    _share("provisioned_share", provisioned_share, provisioned_concurrency)
    arch = _arch(architecture)
    gb = memory_mb / MB_PER_GB
    gb_s = billed_ms(duration_ms, requests) / 1000.0 * gb
    init_gb_s = billed_ms(list(init_ms), len(init_ms)) / 1000.0 * gb
    od_rate = prices.duration_gb_second[arch].usd
    pc_rate = prices.provisioned_concurrency_gb_second[arch].usd
    pc_dur_rate = prices.provisioned_duration_gb_second[arch].usd
    return LambdaBill(
        requests=requests,
        requests_usd=requests / 1e6 * prices.requests_per_million.usd,
        duration_usd=gb_s * (1.0 - provisioned_share) * od_rate,
        init_usd=init_gb_s * od_rate,
        provisioned_usd=provisioned_concurrency * gb * period_s * pc_rate,
        provisioned_duration_usd=gb_s * provisioned_share * pc_dur_rate,
    )


def lambda_cost_per_hour(
    rate_rps: float, *, duration_ms: float, memory_mb: int, prices: LambdaPrices,
    architecture: str | None = "x86_64", provisioned_concurrency: int = 0,
) -> float:
    """USD per hour of Lambda serving a steady ``rate_rps`` (each request ``duration_ms``).

    The concurrency in use is rate x billed duration (Little's law); provisioned environments
    take the first ``provisioned_concurrency`` of it, the rest runs on demand. Equals
    ``lambda_bill`` over one hour at that rate.
    """
    _positive("rate_rps", rate_rps)
    _positive("duration_ms", duration_ms)
    _positive("provisioned_concurrency", provisioned_concurrency)
    lo, hi = LAMBDA_MEMORY_MB
    if not lo <= memory_mb <= hi:
        raise ValueError(f"Lambda memory_mb must be within {lo}..{hi}, got {memory_mb!r}")
    arch = _arch(architecture)
    gb = memory_mb / MB_PER_GB
    billed_s = math.ceil(duration_ms) / 1000.0
    busy = rate_rps * billed_s
    share = min(1.0, provisioned_concurrency / busy) if busy > 0 else 0.0
    requests_per_hour = rate_rps * SECONDS_PER_HOUR
    duration_usd = requests_per_hour * billed_s * gb * (
        (1.0 - share) * prices.duration_gb_second[arch].usd
        + share * prices.provisioned_duration_gb_second[arch].usd)
    reserved_usd = (provisioned_concurrency * gb * SECONDS_PER_HOUR
                    * prices.provisioned_concurrency_gb_second[arch].usd)
    return requests_per_hour / 1e6 * prices.requests_per_million.usd + duration_usd + reserved_usd


@dataclass(frozen=True)
class ServerlessBill:
    """One SageMaker Serverless Inference bill, line by line (USD)."""

    requests: int
    duration_usd: float
    data_usd: float
    provisioned_usd: float
    provisioned_duration_usd: float

    @property
    def total_usd(self) -> float:
        """Sum of every line."""
        return (self.duration_usd + self.data_usd + self.provisioned_usd
                + self.provisioned_duration_usd)

    @property
    def per_million_usd(self) -> float:
        """Total per 1M requests."""
        return cost_per_million(self.total_usd, self.requests)


def serverless_bill(
    *, requests: int, duration_ms: float | Sequence[float], memory_mb: int,
    prices: ServerlessPrices, bytes_in_per_request: float = 0.0,
    bytes_out_per_request: float = 0.0, provisioned_concurrency: int = 0, period_s: float = 0.0,
    provisioned_share: float = 0.0,
) -> ServerlessBill:
    """The SageMaker Serverless Inference bill for ``requests`` invocations (GB = 1024**3 B)."""
    _positive("requests", requests)
    if memory_mb not in SERVERLESS_MEMORY_MB:
        raise ValueError(f"serverless memory_mb must be one of {SERVERLESS_MEMORY_MB}, "
                         f"got {memory_mb!r}")
    _positive("bytes_in_per_request", bytes_in_per_request)
    _positive("bytes_out_per_request", bytes_out_per_request)
    _positive("provisioned_concurrency", provisioned_concurrency)
    _positive("period_s", period_s)
    _share("provisioned_share", provisioned_share, provisioned_concurrency)
    gb = memory_mb / MB_PER_GB
    gb_s = billed_ms(duration_ms, requests) / 1000.0 * gb
    data_gb = requests * (bytes_in_per_request + bytes_out_per_request) / BYTES_PER_GB
    pc_usd = pc_dur_usd = 0.0
    if provisioned_concurrency:
        pc, pc_dur = prices.provisioned_concurrency_gb_second, prices.provisioned_duration_gb_second
        if pc is None or pc_dur is None:
            raise PriceError(
                "the price table has no SageMaker serverless provisioned-concurrency prices; add "
                "sagemaker_serverless.provisioned_concurrency_gb_second and "
                "provisioned_duration_gb_second (with as_of and source) to price this")
        pc_usd = provisioned_concurrency * gb * period_s * pc.usd
        pc_dur_usd = gb_s * provisioned_share * pc_dur.usd
    return ServerlessBill(
        requests=requests,
        duration_usd=gb_s * (1.0 - provisioned_share) * prices.duration_gb_second.usd,
        data_usd=data_gb * prices.data_processed_per_gb.usd,
        provisioned_usd=pc_usd,
        provisioned_duration_usd=pc_dur_usd,
    )


def cost_per_million_at_load(
    drivers: CostDrivers, table: PriceTable, *, served_rps: float,
    duration_ms: float | None = None, region: str | None = None,
) -> float:
    """USD per 1M requests for any deployment kind at the load it actually served.

    Always-on capacity: price per hour / requests served per hour. Lambda: requests + duration
    at ``served_rps`` (with ``drivers.provisioned_concurrency`` reserved for the hour).
    SageMaker serverless: duration only (payload sizes are not known here, so no data-processing
    charge). ``duration_ms`` (billed duration per request) is required for Lambda and serverless.
    """
    _positive("served_rps", served_rps, allow_zero=False)
    if is_always_on(drivers.kind):
        return cost_per_inference_at_load(hourly_cost(drivers, table, region), served_rps) * 1e6
    if duration_ms is None or drivers.memory_mb is None:
        raise ValueError(f"a {drivers.kind!r} deployment needs duration_ms and "
                         "CostDrivers.memory_mb to be priced")
    prices = table.region(region)
    if drivers.kind == "lambda":
        hourly = lambda_cost_per_hour(
            served_rps, duration_ms=duration_ms, memory_mb=drivers.memory_mb,
            prices=prices.lambda_, architecture=drivers.architecture,
            provisioned_concurrency=drivers.provisioned_concurrency or 0)
        return hourly / (served_rps * SECONDS_PER_HOUR) * 1e6
    if prices.sagemaker_serverless is None:
        raise PriceError(f"no sagemaker_serverless prices for region {region!r}")
    requests = round(served_rps * SECONDS_PER_HOUR)
    bill = serverless_bill(
        requests=requests, duration_ms=duration_ms, memory_mb=drivers.memory_mb,
        prices=prices.sagemaker_serverless,
        provisioned_concurrency=drivers.provisioned_concurrency or 0,
        period_s=SECONDS_PER_HOUR if drivers.provisioned_concurrency else 0.0)
    return bill.per_million_usd
