"""The price table: prices kept as data (``bench/prices.json``), each with ``as_of`` and ``source``.

Promises:

- ``load(path)`` returns a validated ``PriceTable`` or raises ``PriceError`` naming the file and
  every offending field (unknown keys are refused, prices must be >= 0, dates ISO).
- ``PriceTable.region(name)`` falls back to ``default_region`` when ``name`` is ``None`` and
  raises ``PriceError`` listing the known regions for an unknown one.
- No price lives in Python code: every figure the cost functions use comes from a table.
- ``niser-mlops prices refresh [--region R] [--out PATH]`` rebuilds the table from the AWS
  Price List API (``bench/price_list.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PATH = Path(__file__).with_name("prices.json")
Architecture = Literal["x86_64", "arm64"]


class PriceError(ValueError):
    """A price is missing, or a price table is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Price(_Strict):
    """One price: the figure, its unit, when it was observed and where it came from."""

    usd: float = Field(ge=0, description="The price in US dollars per `unit`.")
    unit: str = Field(min_length=1, description="What one `usd` buys, e.g. 'USD per GB-second'.")
    as_of: dt.date = Field(description="The date the price was observed at its source.")
    source: str = Field(min_length=1, description="Where the price came from (page, API, note).")


class LambdaPrices(_Strict):
    """AWS Lambda prices of one region, per CPU architecture."""

    requests_per_million: Price = Field(description="Request charge per 1M invocations.")
    duration_gb_second: dict[Architecture, Price] = Field(
        description="On-demand duration (and INIT) charge per GB-second, first tier.")
    provisioned_concurrency_gb_second: dict[Architecture, Price] = Field(
        description="Charge per GB-second of provisioned concurrency configured, used or not.")
    provisioned_duration_gb_second: dict[Architecture, Price] = Field(
        description="Duration charge per GB-second for invocations run on provisioned concurrency.")


class ServerlessPrices(_Strict):
    """SageMaker Serverless Inference prices of one region."""

    duration_gb_second: Price = Field(
        description="On-demand inference duration per second per GB of configured memory.")
    data_processed_per_gb: Price = Field(description="Payload in plus out, per GB.")
    provisioned_concurrency_gb_second: Price | None = Field(
        default=None,
        description="Provisioned concurrency per GB-second configured; null if unknown.")
    provisioned_duration_gb_second: Price | None = Field(
        default=None,
        description="Duration on provisioned concurrency per GB-second; null if unknown.")


class RegionPrices(_Strict):
    """Every AWS price the cost model needs for one region."""

    lambda_: LambdaPrices = Field(alias="lambda", description="AWS Lambda prices.")
    sagemaker_hosting_per_hour: dict[str, Price] = Field(
        description="SageMaker real-time hosting, USD per instance-hour, keyed by instance type.")
    sagemaker_training_per_hour: dict[str, Price] = Field(
        default_factory=dict,
        description="SageMaker training jobs, USD per instance-hour, keyed by instance type.")
    sagemaker_serverless: ServerlessPrices | None = Field(
        default=None, description="SageMaker Serverless Inference prices; null if unknown.")
    s3_storage_gb_month: Price | None = Field(
        default=None, description="S3 Standard storage per GB-month; null if unknown.")
    logs_storage_gb_month: Price | None = Field(
        default=None, description="CloudWatch Logs stored data per GB-month; null if unknown.")


class LocalPrices(_Strict):
    """User-set prices for local or on-premise machines (AWS publishes none)."""

    per_core_hour: Price | None = Field(default=None, description="Price of one core for an hour.")
    per_machine_hour: Price | None = Field(
        default=None, description="Price of one whole machine (one local instance) for an hour.")


class PriceTable(_Strict):
    """A region-keyed price table with a default region."""

    schema_version: Literal[1] = Field(description="Format version of this table.")
    currency: Literal["USD"] = Field(description="Currency of every price.")
    default_region: str = Field(description="Region used when none is asked for.")
    notes: list[str] = Field(default_factory=list, description="Free-text notes for readers.")
    regions: dict[str, RegionPrices] = Field(description="Prices per AWS region code.")
    local: LocalPrices = Field(default_factory=LocalPrices, description="Local machine prices.")

    def region(self, name: str | None = None) -> RegionPrices:
        """Prices of region ``name`` (default region when ``None``)."""
        key = name or self.default_region
        try:
            return self.regions[key]
        except KeyError:
            known = ", ".join(sorted(self.regions)) or "(none)"
            raise PriceError(
                f"no prices for region {key!r}; the table knows: {known}. "
                f"Run `niser-mlops prices refresh --region {key}` to fetch them."
            ) from None

    def instance_hourly(self, instance_type: str, region: str | None = None) -> Price:
        """SageMaker hosting price per hour of ``instance_type`` in ``region``."""
        prices = self.region(region).sagemaker_hosting_per_hour
        try:
            return prices[instance_type]
        except KeyError:
            known = ", ".join(sorted(prices))
            raise PriceError(
                f"no hosting price for instance type {instance_type!r} in region "
                f"{region or self.default_region!r}; known types: {known}. Add it to the price "
                "table or refresh it from the Price List API."
            ) from None

    def training_hourly(self, instance_type: str, region: str | None = None) -> Price:
        """SageMaker training price per instance-hour of ``instance_type`` in ``region``."""
        prices = self.region(region).sagemaker_training_per_hour
        try:
            return prices[instance_type]
        except KeyError:
            known = ", ".join(sorted(prices)) or "(none)"
            raise PriceError(
                f"no training price for instance type {instance_type!r} in region "
                f"{region or self.default_region!r}; known types: {known}. Add it to the price "
                "table or refresh it from the Price List API."
            ) from None

    def with_local(
        self, *, per_core_hour: float | None = None, per_machine_hour: float | None = None,
        source: str = "user-set", as_of: dt.date | None = None,
    ) -> PriceTable:
        """A copy with user-set local prices (USD per core-hour and/or per machine-hour)."""
        day = as_of or dt.date.today()
        core = (Price(usd=per_core_hour, unit="USD per core-hour", as_of=day, source=source)
                if per_core_hour is not None else self.local.per_core_hour)
        machine = (Price(usd=per_machine_hour, unit="USD per machine-hour", as_of=day,
                         source=source)
                   if per_machine_hour is not None else self.local.per_machine_hour)
        return self.model_copy(
            update={"local": LocalPrices(per_core_hour=core, per_machine_hour=machine)})


def load(path: str | Path | None = None) -> PriceTable:
    """Read and validate a price table (the packaged ``bench/prices.json`` by default)."""
    file = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise PriceError(f"price table {file} does not exist; pass an existing file") from None
    except json.JSONDecodeError as exc:
        raise PriceError(f"price table {file} is not valid JSON: line {exc.lineno}: {exc.msg}"
                         ) from None
    return parse(raw, origin=str(file))


def parse(raw: object, origin: str = "price table") -> PriceTable:
    """Validate an already-decoded table, naming every bad field."""
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid {origin}:"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                lines.append(f"  unknown key {loc!r}")
            else:
                lines.append(f"  {loc}={err.get('input')!r}: {err['msg']}")
        raise PriceError("\n".join(lines)) from None


def save(table: PriceTable, path: str | Path) -> Path:
    """Write ``table`` as indented JSON (keys as in ``prices.json``); returns the path."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    data = table.model_dump(mode="json", by_alias=True)
    file.write_text(json.dumps(data, indent=2) + "\n")
    return file
