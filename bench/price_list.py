"""Refresh the price table from the AWS Price List API (``pricing`` client, us-east-1 endpoint).

Promises:

- ``refresh(base, region)`` returns ``(new_table, report)``: every price it could read from the
  Price List API for ``region`` replaced, with today's ``as_of`` and source
  ``"AWS Price List API"``; every price it could not read carried over unchanged (keeping its own
  ``as_of`` and ``source``) and named in ``report``.
- Without AWS credentials it raises ``MissingCredentials`` saying how to provide them, before
  any request is sent.
- Queries: ``AmazonSageMaker`` with ``productFamily=ML Instance``, ``component=Hosting``,
  ``instanceName``, ``regionCode`` (one query per instance type in the base table), and
  ``AWSLambda`` by ``group`` and ``regionCode``. Tiered prices take their first tier.
- SageMaker serverless prices are carried over (their Price List usage types are not mapped yet).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from bench.prices import (
    Architecture,
    LambdaPrices,
    Price,
    PriceError,
    PriceTable,
    RegionPrices,
)

SOURCE = "AWS Price List API"
PRICING_ENDPOINT_REGION = "us-east-1"  # the Price List API answers only in a few regions

# Lambda groups in the AWSLambda offer, per architecture.
LAMBDA_GROUPS: dict[str, dict[Architecture, str]] = {
    "duration_gb_second": {"x86_64": "AWS-Lambda-Duration", "arm64": "AWS-Lambda-Duration-ARM"},
    "provisioned_concurrency_gb_second": {
        "x86_64": "AWS-Lambda-Provisioned-Concurrency",
        "arm64": "AWS-Lambda-Provisioned-Concurrency-ARM",
    },
    "provisioned_duration_gb_second": {
        "x86_64": "AWS-Lambda-Duration-Provisioned",
        "arm64": "AWS-Lambda-Duration-Provisioned-ARM",
    },
}
LAMBDA_REQUEST_GROUP = "AWS-Lambda-Requests"


class MissingCredentials(PriceError):
    """No AWS credentials were found, so the Price List API cannot be called."""


def _require_credentials() -> None:
    from deployers import aws

    if aws.session().get_credentials() is None:
        raise MissingCredentials(
            "no AWS credentials found, so prices cannot be refreshed from the AWS Price List "
            "API. Provide credentials with pricing:GetProducts permission, e.g. "
            "`export AWS_PROFILE=<profile>` (after `aws configure --profile <profile>` or "
            "`aws sso login`), or `export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...`. "
            "Without them, edit bench/prices.json by hand and set as_of and source."
        )


def pricing_client() -> Any:
    """The ``pricing`` client from the project's one client seam, on the us-east-1 endpoint."""
    from deployers import aws

    return aws.client("pricing", region_name=PRICING_ENDPOINT_REGION)


def _products(client: Any, service: str, filters: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Every decoded product of ``service`` matching all ``filters`` (follows NextToken)."""
    query = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()]
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"ServiceCode": service, "Filters": query,
                                  "FormatVersion": "aws_v1", "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = client.get_products(**kwargs)
        for item in page.get("PriceList", []):
            yield json.loads(item) if isinstance(item, str) else item
        token = page.get("NextToken")
        if not token:
            return


def _first_tier_usd(product: dict[str, Any]) -> tuple[float, str] | None:
    """The on-demand USD price of the tier starting at 0, and its unit; ``None`` if absent."""
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dim in term.get("priceDimensions", {}).values():
            if str(dim.get("beginRange", "0")) in ("0", "0.0"):
                usd = dim.get("pricePerUnit", {}).get("USD")
                if usd is not None:
                    return float(usd), str(dim.get("unit", ""))
    return None


def _one_price(client: Any, service: str, filters: dict[str, str],
               accept: Any = None) -> tuple[float, str] | None:
    """The single price matching ``filters``; ``None`` if none; ``PriceError`` if ambiguous."""
    found: set[tuple[float, str]] = set()
    for product in _products(client, service, filters):
        if accept is not None and not accept(product):
            continue
        price = _first_tier_usd(product)
        if price is not None and price[0] > 0:
            found.add(price)
    if len(found) > 1:
        raise PriceError(f"{service} {filters} matched several prices {sorted(found)}; "
                         "narrow the filters before trusting any of them")
    return found.pop() if found else None


def _is_training(product: dict[str, Any]) -> bool:
    attrs = product.get("product", {}).get("attributes", {})
    return "Train" in str(attrs.get("usagetype", "Train"))


def _is_hourly_hosting(product: dict[str, Any]) -> bool:
    attrs = product.get("product", {}).get("attributes", {})
    return "Host" in str(attrs.get("usagetype", "Host"))


def refresh(
    base: PriceTable, region: str | None = None, client: Any | None = None,
    today: dt.date | None = None,
) -> tuple[PriceTable, list[str]]:
    """Rebuild ``region``'s prices from the Price List API on top of ``base``."""
    region = region or base.default_region
    if client is None:
        _require_credentials()
        client = pricing_client()
    day = today or dt.date.today()
    old = base.regions.get(region) or base.region(base.default_region)
    report: list[str] = []

    def fresh(usd: float, unit: str) -> Price:
        return Price(usd=usd, unit=unit, as_of=day, source=SOURCE)

    def instances(kind: str, previous_rows: dict[str, Price], accept: Any) -> dict[str, Price]:
        """``kind`` ("Hosting" or "Training") prices per instance type, refreshed one by one."""
        unit = ("USD per instance-hour (real-time hosting)" if kind == "Hosting"
                else "USD per instance-hour (training job, billed per second)")
        label = "" if kind == "Hosting" else "training "
        rows: dict[str, Price] = {}
        for instance, previous in sorted(previous_rows.items()):
            try:
                got = _one_price(client, "AmazonSageMaker", {
                    "productFamily": "ML Instance", "component": kind,
                    "instanceName": instance, "regionCode": region}, accept=accept)
            except PriceError as exc:
                rows[instance] = previous
                report.append(f"kept {label}{instance}: {exc}")
                continue
            if got is None:
                rows[instance] = previous
                report.append(f"kept {label}{instance}: not found in the Price List for "
                              f"{region}")
            else:
                rows[instance] = fresh(got[0], unit)
                report.append(f"{label}{instance}: {got[0]} USD per hour")
        return rows

    hosting = instances("Hosting", old.sagemaker_hosting_per_hour, _is_hourly_hosting)
    training = instances("Training", old.sagemaker_training_per_hour, _is_training)

    lam = old.lambda_
    requests = _one_price(client, "AWSLambda", {"group": LAMBDA_REQUEST_GROUP,
                                                "regionCode": region})
    if requests is None:
        requests_price = lam.requests_per_million
        report.append("kept lambda requests: not found")
    else:
        requests_price = fresh(requests[0] * 1e6, "USD per 1M requests")
        report.append(f"lambda requests: {requests[0] * 1e6:.4f} USD per 1M")
    updated: dict[str, dict[Architecture, Price]] = {}
    for field, groups in LAMBDA_GROUPS.items():
        current: dict[Architecture, Price] = dict(getattr(lam, field))
        for arch, group in groups.items():
            got = _one_price(client, "AWSLambda", {"group": group, "regionCode": region})
            if got is None:
                report.append(f"kept lambda {field} {arch}: group {group} not found")
                continue
            unit = current[arch].unit if arch in current else "USD per GB-second"
            current[arch] = fresh(got[0], unit)
            report.append(f"lambda {field} {arch}: {got[0]} USD per GB-second")
        updated[field] = current
    new_lambda = LambdaPrices(requests_per_million=requests_price, **updated)
    if old.sagemaker_serverless is not None:
        report.append("kept sagemaker_serverless: not refreshed from the Price List API")
    new_region = RegionPrices.model_validate({
        "lambda": new_lambda, "sagemaker_hosting_per_hour": hosting,
        "sagemaker_training_per_hour": training,
        "sagemaker_serverless": old.sagemaker_serverless,
        "s3_storage_gb_month": old.s3_storage_gb_month,
        "logs_storage_gb_month": old.logs_storage_gb_month})
    regions = dict(base.regions)
    regions[region] = new_region
    return base.model_copy(update={"regions": regions}), report
