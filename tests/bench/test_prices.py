"""The price table as data, and its refresh from the AWS Price List API (botocore Stubber)."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from bench import price_list, prices
from bench.cli import prices as prices_command
from deployers import aws

TODAY = dt.date(2026, 11, 28)
REQUIRED_INSTANCES = {"ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge", "ml.m5.large",
                      "ml.m5.xlarge", "ml.g4dn.xlarge", "ml.g4dn.2xlarge"}


def test_packaged_table_loads_with_dated_sourced_prices_for_the_default_region():
    table = prices.load()
    assert table.default_region == "us-east-1"
    region = table.region()
    assert set(region.sagemaker_hosting_per_hour) >= REQUIRED_INSTANCES
    lam = region.lambda_
    for group in (lam.duration_gb_second, lam.provisioned_concurrency_gb_second,
                  lam.provisioned_duration_gb_second):
        assert set(group) == {"x86_64", "arm64"}
    every = [lam.requests_per_million, *region.sagemaker_hosting_per_hour.values()]
    for price in every:
        assert price.source and price.as_of <= dt.date.today()
    assert table.local.per_core_hour is None and table.local.per_machine_hour is None


def _raw() -> dict[str, Any]:
    return json.loads(prices.DEFAULT_PATH.read_text())


def test_unknown_keys_are_refused_naming_the_key():
    raw = _raw()
    raw["regions"]["us-east-1"]["lambda"]["requests_per_million"]["usd_per_request"] = 1
    with pytest.raises(prices.PriceError, match=r"unknown key .*usd_per_request"):
        prices.parse(raw)


def test_negative_price_and_missing_source_are_refused_naming_the_field():
    raw = _raw()
    raw["regions"]["us-east-1"]["sagemaker_hosting_per_hour"]["ml.c5.large"]["usd"] = -1
    del raw["regions"]["us-east-1"]["sagemaker_hosting_per_hour"]["ml.m5.large"]["source"]
    with pytest.raises(prices.PriceError) as err:
        prices.parse(raw, origin="test.json")
    text = str(err.value)
    assert "test.json" in text and "ml.c5.large.usd=-1" in text
    assert "ml.m5.large.source" in text


def test_unknown_region_and_instance_type_errors_list_what_is_known(tmp_path):
    table = prices.load()
    with pytest.raises(prices.PriceError, match=r"'eu-west-9'.*us-east-1.*refresh --region"):
        table.region("eu-west-9")
    with pytest.raises(prices.PriceError, match=r"'ml.x9.huge'.*ml.c5.xlarge"):
        table.instance_hourly("ml.x9.huge")
    with pytest.raises(prices.PriceError, match="does not exist"):
        prices.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(prices.PriceError, match=r"bad.json is not valid JSON: line 1"):
        prices.load(bad)


def test_save_and_load_round_trip_keeps_every_price(tmp_path):
    table = prices.load().with_local(per_machine_hour=0.5, source="lab machine",
                                     as_of=dt.date(2026, 1, 2))
    again = prices.load(prices.save(table, tmp_path / "p.json"))
    assert again == table
    assert again.local.per_machine_hour is not None
    assert again.local.per_machine_hour.source == "lab machine"


# --- Price List API ----------------------------------------------------------------------------

def _product(service: str, attrs: dict[str, str], tiers: list[tuple[str, str, str]],
             unit: str) -> str:
    """One PriceList entry as the API returns it: a JSON string."""
    sku = "SKU" + str(abs(hash((service, tuple(attrs.items())))) % 10**8)
    dims = {}
    for i, (begin, end, usd) in enumerate(tiers):
        rate = f"{sku}.JRTCKXETXF.RATE{i}"
        dims[rate] = {"unit": unit, "endRange": end, "beginRange": begin, "appliesTo": [],
                      "description": f"${usd} per {unit}", "rateCode": rate,
                      "pricePerUnit": {"USD": usd}}
    doc = {
        "product": {"productFamily": attrs.pop("productFamily", "Serverless"),
                    "attributes": {"servicecode": service, **attrs}, "sku": sku},
        "serviceCode": service,
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "priceDimensions": dims, "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z",
            "offerTermCode": "JRTCKXETXF", "termAttributes": {}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z",
    }
    return json.dumps(doc)


def _hosting(instance: str, usd: str) -> str:
    return _product("AmazonSageMaker", {
        "productFamily": "ML Instance", "component": "Hosting", "instanceName": instance,
        "regionCode": "us-west-2", "location": "US West (Oregon)",
        "usagetype": f"USW2-Host:{instance}", "operation": "RunInstance"},
        [("0", "Inf", usd)], "Hrs")


def _lambda(group: str, usagetype: str, tiers: list[tuple[str, str, str]], unit: str) -> str:
    return _product("AWSLambda", {"group": group, "regionCode": "us-west-2",
                                  "usagetype": f"USW2-{usagetype}", "location": "US West (Oregon)"},
                    tiers, unit)


def _filters(**kv: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in kv.items()]


def _expect(service: str, filters: dict[str, str], token: str | None = None) -> dict[str, Any]:
    params = {"ServiceCode": service, "Filters": _filters(**filters), "FormatVersion": "aws_v1",
              "MaxResults": 100}
    if token:
        params["NextToken"] = token
    return params


def _page(items: list[str], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": items}
    if token:
        page["NextToken"] = token
    return page


@pytest.fixture
def small_base() -> prices.PriceTable:
    """The packaged table with two hosting instance types and no training ones, so the stubbed
    conversation stays short."""
    table = prices.load()
    region = table.region()
    hosting = {k: region.sagemaker_hosting_per_hour[k] for k in ("ml.c5.xlarge", "ml.m5.large")}
    return table.model_copy(update={"regions": {"us-east-1": region.model_copy(
        update={"sagemaker_hosting_per_hour": hosting, "sagemaker_training_per_hour": {}})}})


def _stub_refresh(stubber: Stubber) -> None:
    """The conversation refresh(region='us-west-2') has, in order, with realistic answers."""
    def host(instance: str) -> dict[str, str]:
        return {"productFamily": "ML Instance", "component": "Hosting",
                "instanceName": instance, "regionCode": "us-west-2"}

    stubber.add_response("get_products", _page([_hosting("ml.c5.xlarge", "0.2040000000")]),
                         _expect("AmazonSageMaker", host("ml.c5.xlarge")))
    stubber.add_response("get_products", _page([]),  # not offered: kept from the base table
                         _expect("AmazonSageMaker", host("ml.m5.large")))
    req = {"group": "AWS-Lambda-Requests", "regionCode": "us-west-2"}
    stubber.add_response("get_products", _page([_lambda(
        "AWS-Lambda-Requests", "Request", [("0", "Inf", "0.0000002000")], "Requests")]),
        _expect("AWSLambda", req))
    dur = {"group": "AWS-Lambda-Duration", "regionCode": "us-west-2"}
    tiers = [("0", "6000000000", "0.0000166667"), ("6000000000", "15000000000", "0.0000150000"),
             ("15000000000", "Inf", "0.0000133334")]
    stubber.add_response("get_products", _page([], token="tok-1"), _expect("AWSLambda", dur))
    stubber.add_response("get_products", _page([_lambda(
        "AWS-Lambda-Duration", "Lambda-GB-Second", list(reversed(tiers)), "Lambda-GB-Second")]),
        _expect("AWSLambda", dur, token="tok-1"))
    answers = [
        ("AWS-Lambda-Duration-ARM", "Lambda-GB-Second-ARM", "0.0000133334"),
        ("AWS-Lambda-Provisioned-Concurrency", "Lambda-Provisioned-Concurrency", "0.0000041667"),
        ("AWS-Lambda-Provisioned-Concurrency-ARM", None, None),
        ("AWS-Lambda-Duration-Provisioned", "Lambda-Provisioned-GB-Second", "0.0000097222"),
        ("AWS-Lambda-Duration-Provisioned-ARM", "Lambda-Provisioned-GB-Second-ARM",
         "0.0000077778"),
    ]
    for group, usage, usd in answers:
        items = [] if usd is None or usage is None else [
            _lambda(group, usage, [("0", "Inf", usd)], "Lambda-GB-Second")]
        stubber.add_response("get_products", _page(items),
                             _expect("AWSLambda", {"group": group, "regionCode": "us-west-2"}))


def _pricing_client() -> Any:
    return boto3.client("pricing", region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def test_refresh_reads_the_price_list_api_and_dates_what_it_read(small_base):
    client = _pricing_client()
    with Stubber(client) as stubber:
        _stub_refresh(stubber)
        table, report = price_list.refresh(small_base, region="us-west-2", client=client,
                                           today=TODAY)
        stubber.assert_no_pending_responses()
    west = table.region("us-west-2")
    c5 = west.sagemaker_hosting_per_hour["ml.c5.xlarge"]
    assert (c5.usd, c5.as_of, c5.source) == (0.204, TODAY, "AWS Price List API")
    kept = west.sagemaker_hosting_per_hour["ml.m5.large"]
    assert kept == small_base.region().sagemaker_hosting_per_hour["ml.m5.large"]
    assert west.lambda_.requests_per_million.usd == pytest.approx(0.20)
    assert west.lambda_.duration_gb_second["x86_64"].usd == 0.0000166667  # first tier
    assert west.lambda_.duration_gb_second["x86_64"].as_of == TODAY
    arm_pc = west.lambda_.provisioned_concurrency_gb_second["arm64"]
    assert arm_pc == small_base.region().lambda_.provisioned_concurrency_gb_second["arm64"]
    assert any("kept ml.m5.large" in line for line in report)
    assert any("Provisioned-Concurrency-ARM not found" in line for line in report)
    assert "us-east-1" in table.regions  # other regions untouched
    assert table.region("us-east-1") == small_base.region("us-east-1")


def test_ambiguous_hosting_prices_are_kept_and_reported(small_base):
    client = _pricing_client()
    one = small_base.model_copy(update={"regions": {"us-east-1": small_base.region().model_copy(
        update={"sagemaker_hosting_per_hour": {
            "ml.c5.xlarge": small_base.instance_hourly("ml.c5.xlarge")}})}})
    with Stubber(client) as stubber:
        stubber.add_response("get_products", _page([_hosting("ml.c5.xlarge", "0.204"),
                                                    _hosting("ml.c5.xlarge", "0.238")]))
        for _ in range(7):
            stubber.add_response("get_products", _page([]))
        table, report = price_list.refresh(one, region="us-east-1", client=client, today=TODAY)
    assert table.instance_hourly("ml.c5.xlarge") == one.instance_hourly("ml.c5.xlarge")
    assert any("several prices" in line for line in report)


def test_refresh_asks_for_training_prices_and_keeps_storage_prices(small_base):
    region = small_base.region()
    base = small_base.model_copy(update={"regions": {"us-east-1": region.model_copy(update={
        "sagemaker_hosting_per_hour": {},
        "sagemaker_training_per_hour": {"ml.m5.xlarge": prices.load().training_hourly(
            "ml.m5.xlarge")}})}})
    client = _pricing_client()
    training = _product("AmazonSageMaker", {
        "productFamily": "ML Instance", "component": "Training", "instanceName": "ml.m5.xlarge",
        "regionCode": "us-east-1", "usagetype": "USE1-Train:ml.m5.xlarge"},
        [("0", "Inf", "0.2300000000")], "Hrs")
    with Stubber(client) as stubber:
        stubber.add_response("get_products", _page([training]), _expect("AmazonSageMaker", {
            "productFamily": "ML Instance", "component": "Training",
            "instanceName": "ml.m5.xlarge", "regionCode": "us-east-1"}))
        for _ in range(7):  # the Lambda groups: none found, kept
            stubber.add_response("get_products", _page([]))
        table, report = price_list.refresh(base, region="us-east-1", client=client, today=TODAY)
    got = table.training_hourly("ml.m5.xlarge")
    assert (got.usd, got.as_of) == (0.23, TODAY)
    assert "training ml.m5.xlarge: 0.23 USD per hour" in report
    assert table.region().s3_storage_gb_month == region.s3_storage_gb_month is not None
    assert table.region().logs_storage_gb_month == region.logs_storage_gb_month is not None


def test_training_price_of_an_unknown_type_names_the_known_ones():
    with pytest.raises(prices.PriceError, match=r"ml\.p3\.2xlarge.*known types: .*ml\.m5\.xlarge"):
        prices.load().training_hourly("ml.p3.2xlarge")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws.reset()
    yield
    aws.reset()


def test_refresh_without_credentials_says_how_to_provide_them(no_credentials):
    with pytest.raises(price_list.MissingCredentials, match=r"AWS_PROFILE.*AWS_ACCESS_KEY_ID"):
        price_list.refresh(prices.load(), region="us-east-1")


def run_prices(*args: str):
    """``niser-mlops prices ARGS`` in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(prices_command, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_refresh_without_credentials_exits_2_with_the_reason(no_credentials):
    code, _out, err = run_prices("refresh")
    assert code == 2
    assert "no AWS credentials found" in err


def test_cli_bad_option_is_named():
    code, _out, err = run_prices("refresh", "--regoin", "us-east-1")
    assert code == 2
    assert "--regoin" in err


def test_cli_refresh_writes_a_loadable_dated_table(monkeypatch, tmp_path, small_base):
    base = prices.save(small_base, tmp_path / "base.json")
    client = _pricing_client()
    stubber = Stubber(client)
    _stub_refresh(stubber)
    stubber.activate()
    monkeypatch.setattr(price_list, "_require_credentials", lambda: None)
    monkeypatch.setattr(price_list, "pricing_client", lambda: client)
    out = tmp_path / "new.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a serialisation mismatch would warn
        code, stdout, _err = run_prices("refresh", "--region", "us-west-2", "--base", str(base),
                                        "--out", str(out))
    assert code == 0
    stubber.assert_no_pending_responses()
    c5 = prices.load(out).instance_hourly("ml.c5.xlarge", "us-west-2")
    assert (c5.usd, c5.source, c5.as_of) == (0.204, "AWS Price List API", dt.date.today())
    assert f"wrote {out}" in stdout


def test_cli_show_prints_the_region():
    code, stdout, _err = run_prices("show", "--region", "us-east-1")
    assert code == 0
    shown = json.loads(stdout)
    assert shown["us-east-1"]["sagemaker_hosting_per_hour"]["ml.c5.xlarge"]["usd"] == 0.204


def test_cli_show_of_an_unknown_region_exits_2_naming_the_known_ones():
    code, _out, err = run_prices("show", "--region", "xx-nowhere-1")
    assert code == 2
    assert "no prices for region 'xx-nowhere-1'" in err and "us-east-1" in err


def test_every_training_instance_type_offered_has_a_training_price():
    from deployers.sagemaker.training_settings import TRAINING_INSTANCE_TYPES

    table = prices.load()
    assert {t: table.training_hourly(t).usd > 0 for t in TRAINING_INSTANCE_TYPES} == {
        t: True for t in TRAINING_INSTANCE_TYPES}
