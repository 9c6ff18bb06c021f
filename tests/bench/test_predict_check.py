"""The validation on shapes made by the model itself: the check must find (almost) no error,
and must find the error it is shown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench import perfmodel as pm
from bench import perfmodel_open as po
from bench import predict_check as pc
from bench.power_tune import MB_PER_VCPU
from bench.prices import load

USERS = [1, 2, 4, 8, 16]
HOST = pm.Host(cores=2, background_cores=0.1, client_ms=1.5, target_ms=6.0)
TRUTH = pm.ServerModel(pm.Scaling(0.0065, 0.0004), 11.0, 2.0,
                       pm.Tails(((1, 0.95, 1.3), (8, 0.9, 1.7))))
LAMBDA = po.LambdaModel(a=3.0, b=4.0, overhead_ms=2.5, lo=0.2, hi=0.6,
                        tails=pm.Tails(((1, 0.97, 1.25), (4, 0.97, 1.5))), ceiling_rps=150.0)


def _server(name: str, role: pc.Role, shape: pm.Shape) -> pc.Measured:
    return pc.Measured(name, role, tuple(TRUTH.predict(shape, USERS, HOST)), HOST, shape=shape)


def _lambda(memory_mb: int, role: pc.Role) -> pc.Measured:
    limit = int(2 // (memory_mb / MB_PER_VCPU))
    levels = tuple(LAMBDA.predict(memory_mb, USERS, limit, host=HOST))
    return pc.Measured(f"lambda-{memory_mb}", role, levels, HOST, memory_mb=memory_mb,
                       billed_ms=LAMBDA.duration_ms(memory_mb))


def _shapes() -> list[pc.Measured]:
    return [
        _server("half", "fit", pm.Shape(0.5, 1)), _server("one", "fit", pm.Shape(1.0, 1)),
        _server("two", "held-out", pm.Shape(2.0, 2)),
        _server("two-by-one", "held-out", pm.Shape(1.0, 1, 2)),
        _lambda(512, "fit"), _lambda(1024, "fit"), _lambda(1769, "held-out"),
    ]


def _prices() -> tuple[float, object]:
    region = load().region()
    return region.sagemaker_hosting_per_hour["ml.c5.large"].usd / 2, region.lambda_


def test_the_check_finds_no_error_in_shapes_the_model_made() -> None:
    vcpu_hour, lam = _prices()
    result = pc.check(_shapes(), vcpu_hour, lam)  # type: ignore[arg-type]
    assert [h.measured.name for h in result.held_out] == ["two", "two-by-one", "lambda-1769"]
    assert result.mape_mean < 3.0
    assert result.mape_p95 < 5.0
    assert result.throughput_error < 3.0
    assert result.agreement == 1.0
    assert result.summary_line().startswith("prediction error: mean latency ")
    assert "cheapest choice agreement 100 %" in result.summary_line()
    assert set(result.metrics()) == {"prediction_mape_latency", "prediction_mape_p95",
                                     "prediction_mape_throughput",
                                     "prediction_cheapest_agreement",
                                     "prediction_scaling_sigma", "prediction_lambda_a_ms",
                                     "prediction_lambda_b_ms", "prediction_lambda_share_lo",
                                     "prediction_lambda_share_hi",
                                     "prediction_lambda_ceiling_rps"}
    assert result.sigma == pytest.approx(TRUTH.scaling.sigma, rel=0.05)
    assert result.lambda_law is not None
    assert (result.lambda_law.a, result.lambda_law.b) == pytest.approx((LAMBDA.a, LAMBDA.b))
    # every fitted size reaches the invoke front's ceiling at its highest level
    assert result.lambda_law.ceiling_rps == pytest.approx(LAMBDA.ceiling_rps)


def test_the_check_reports_the_error_of_a_shape_that_runs_slower_than_predicted() -> None:
    vcpu_hour, lam = _prices()
    shapes = _shapes()
    slow = shapes[2]
    shapes[2] = replace(slow, levels=tuple(
        pm.Level(lv.users, 1.5 * lv.mean_ms, 1.5 * lv.p50_ms, 1.5 * lv.p95_ms,
                 lv.throughput_rps / 1.5) for lv in slow.levels))
    result = pc.check(shapes, vcpu_hour, lam)  # type: ignore[arg-type]
    two = result.held_out[0]
    assert two.mape_mean == pytest.approx(100 * (1 - 1 / 1.5), rel=0.05)
    assert two.throughput_error == pytest.approx(50.0, rel=0.05)
    assert any(line.startswith("two ") and "error: mean latency" in line
               for line in pc.table(result).splitlines())


def test_a_lambda_size_beyond_the_fitted_ones_is_flagged_extrapolated() -> None:
    vcpu_hour, lam = _prices()
    result = pc.check(_shapes(), vcpu_hour, lam)  # type: ignore[arg-type]
    assert result.held_out[-1].note == "extrapolated beyond the fitted sizes"


def test_the_lambda_model_needs_two_fitted_sizes() -> None:
    vcpu_hour, lam = _prices()
    shapes = [s for s in _shapes() if s.name != "lambda-1024"]
    with pytest.raises(ValueError, match="two fitted sizes"):
        pc.check(shapes, vcpu_hour, lam)  # type: ignore[arg-type]


def test_measurements_survive_a_round_trip_through_json() -> None:
    shapes = _shapes()
    assert pc.loads(pc.dumps(shapes)) == shapes


def test_a_file_that_is_not_a_measurement_file_is_refused() -> None:
    with pytest.raises(ValueError, match="not a predict-check measurement file"):
        pc.loads('[{"name": "x"}]')


def test_the_command_rechecks_a_measurement_file_without_measuring(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from bench.predict_cli import predict_check

    path = tmp_path / "measured.json"
    path.write_text(pc.dumps(_shapes()))
    out = CliRunner().invoke(predict_check, ["--measurements", str(path)])
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines()[-1].startswith("prediction error: mean latency ")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    out = CliRunner().invoke(predict_check, ["--measurements", str(bad)])
    assert out.exit_code == 2 and "--measurements" in out.output


def test_the_shared_host_takes_the_least_background_per_request_of_the_fitted_shapes() -> None:
    quiet = replace(HOST, background_ms=0.1)
    busy = replace(HOST, background_cores=0.3, background_ms=1.4)  # other work came and went
    shapes = [replace(m, host=h) for m, h in zip(_shapes()[:2], (busy, quiet), strict=True)]
    host = pc.shared_host(shapes)
    assert host.background_ms == pytest.approx(0.1)
    assert host.background_cores == pytest.approx(0.2)  # the fixed figure is still their mean
    assert pc.shared_host(_shapes()[:2]).background_ms is None  # not measured in old files
