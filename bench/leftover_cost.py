"""What a leftover costs per month if left running: pure functions over the price table.

- An endpoint of instances: instance count x hourly price x ``HOURS_PER_MONTH`` (730 h, AWS's
  convention), whether it serves anything or not.
- Lambda provisioned concurrency: environments x memory (GB) x seconds in a month x the
  provisioned-concurrency price, used or not. A function without it costs nothing idle.
- S3 objects and log groups: stored GB x the storage price per GB-month.
- A local deployment or process: the table's local price (``local.per_core_hour`` or
  ``per_machine_hour``) when set; else 0, saying so.
- Configs, models, roles, serverless endpoints: nothing while idle.

On the moto server (``Leftover.where == "moto"``) the figure is what the same resource would
cost on AWS, and the basis says so: nothing was billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cost import HOURS_PER_MONTH, SECONDS_PER_HOUR, hourly_cost
from bench.prices import Architecture, Price, PriceError, PriceTable
from deployers.base import CostDrivers
from deployers.leftovers import Leftover

GB = 1e9  # storage is priced per decimal GB


@dataclass(frozen=True)
class Monthly:
    """A leftover's cost per month if left running, and what that figure rests on."""

    usd: float
    basis: str


def _storage(size_bytes: int, price: Price | None, what: str) -> Monthly:
    if price is None:
        return Monthly(0.0, f"{what}: no storage price in the table")
    return Monthly(size_bytes / GB * price.usd, f"{size_bytes / 1e6:.1f} MB x ${price.usd}/GB-month")


def monthly(row: Leftover, table: PriceTable, region: str | None = None) -> Monthly:
    """``row``'s cost per month if left running (module docstring)."""
    out = _monthly(row, table, region)
    if row.where == "moto" and out.usd > 0:
        return Monthly(out.usd, f"would be, on AWS (moto stand-in, nothing billed): {out.basis}")
    return out


def _monthly(row: Leftover, table: PriceTable, region: str | None) -> Monthly:
    prices = table.region(region)
    if row.kind == "s3-prefix":
        return _storage(row.size_bytes, prices.s3_storage_gb_month, "S3")
    if row.kind == "log-group":
        return _storage(row.size_bytes, prices.logs_storage_gb_month, "CloudWatch Logs")
    cost = row.cost
    if cost is None and row.kind == "process":
        return _local(table, None, 1, "a process on this machine")
    if cost is None:
        return Monthly(0.0, "nothing while idle")
    if cost.kind == "instance":
        per_hour = hourly_cost(cost, table, region)
        return Monthly(per_hour * HOURS_PER_MONTH,
                       f"{cost.instance_count} x {cost.instance_type} at ${per_hour:.4g}/h x"
                       f" {HOURS_PER_MONTH:.0f} h")
    if cost.kind == "lambda" and cost.provisioned_concurrency and cost.memory_mb:
        arch: Architecture = "arm64" if cost.architecture == "arm64" else "x86_64"
        rate = prices.lambda_.provisioned_concurrency_gb_second[arch].usd
        gb_s = cost.provisioned_concurrency * cost.memory_mb / 1024 * HOURS_PER_MONTH * \
            SECONDS_PER_HOUR
        return Monthly(gb_s * rate, f"{cost.provisioned_concurrency} provisioned x"
                                    f" {cost.memory_mb} MB, ${rate}/GB-s, used or not")
    if cost.kind in ("local", "inprocess"):
        return _local(table, cost.cpus, cost.instance_count or 1, "this machine")
    return Monthly(0.0, "billed per request only: nothing while idle")


def _local(table: PriceTable, cpus: float | None, count: int, what: str) -> Monthly:
    try:
        per_hour = hourly_cost(CostDrivers("local", instance_count=count, cpus=cpus), table)
    except (PriceError, ValueError):
        return Monthly(0.0, f"{what}: no local price set (prices.json local.per_core_hour or"
                            " per_machine_hour)")
    return Monthly(per_hour * HOURS_PER_MONTH, f"{what} at ${per_hour:.4g}/h x {HOURS_PER_MONTH:.0f} h")
