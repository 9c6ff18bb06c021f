"""The performance model on hand-worked cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench import perfmodel as pm
from bench import perfmodel_open as po
from bench.power_tune import MB_PER_VCPU


def test_mva_of_one_single_server_station_gives_n_times_demand() -> None:
    st = pm.Station(service_ms=5.0, cpus=1, plateau_rps=200.0)
    for n, (r, x) in enumerate(pm.mva(st, 0.0, 8), start=1):
        assert r == pytest.approx(n * 5.0)
        assert x == pytest.approx(200.0)


def test_mva_with_a_delay_adds_it_below_saturation_and_caps_throughput() -> None:
    st = pm.Station(service_ms=10.0, cpus=4, plateau_rps=400.0)
    curve = pm.mva(st, 2.0, 40)
    assert curve[0][0] == pytest.approx(12.0)  # alone: delay + service
    assert curve[-1][1] == pytest.approx(400.0, rel=0.01)  # 4 servers / 10 ms


def test_two_identical_instances_halve_the_response_time_at_large_n() -> None:
    model = pm.ServerModel(pm.Scaling(0.004, 0.0), 4.0, 0.0, pm.Tails(((1, 1.0, 1.0),)))
    one = model.predict(pm.Shape(1.0), [200])[0].mean_ms
    two = model.predict(pm.Shape(1.0, instances=2), [200])[0].mean_ms
    assert two == pytest.approx(one / 2, rel=0.02)


def test_a_host_cap_limits_the_station() -> None:
    host = pm.Host(cores=2, background_cores=0.0, client_ms=2.0, target_ms=8.0)
    assert host.cap_rps == pytest.approx(200.0)
    st = pm.Station(service_ms=8.0, cpus=2, plateau_rps=250.0, cap_rps=host.cap_rps)
    assert 1000 * st.rate(100) == pytest.approx(200.0)  # 250 without the host


def test_a_host_with_background_per_request_spends_every_core_on_requests() -> None:
    fixed = pm.Host(cores=2, background_cores=0.5, client_ms=1.0, target_ms=3.0)
    per_request = pm.Host(2, 0.5, 1.0, 3.0, background_ms=1.0)
    assert fixed.cap_rps == pytest.approx(1.5 / 0.004)  # (2 - 0.5) cores / 4 ms
    assert per_request.cap_rps == pytest.approx(2 / 0.005)  # 2 cores / (1 + 3 + 1) ms
    assert per_request.cap_with(1.0) == pytest.approx(2 / 0.003)


def test_the_host_cap_takes_the_fitted_workers_cpu_at_each_workers_load() -> None:
    host = pm.Host(cores=2, background_cores=0.0, client_ms=0.0, target_ms=10.0)
    model = pm.ServerModel(pm.Scaling(0.001, 0.0), 1.0, 0.0, pm.Tails(((1, 1.0, 1.0),)),
                           worker_cpu=((1.0, 4.0), (8.0, 2.0)))
    assert model.host_cap(host, 4.5) == pytest.approx(2 / 0.003)  # 3 ms halfway
    assert model.host_cap(host, 20) == pytest.approx(2 / 0.002)  # held flat beyond the ends
    assert model.host_cap(None, 4.5) == math.inf
    # Two workers, the scaling law far above: the host caps them, at the CPU per request one
    # worker took with half the users (4 of 8 users: 4 - 2 x 3/7 ms, interpolated).
    x = model.predict(pm.Shape(2.0, workers=2), [8], host)[0].throughput_rps
    assert x == pytest.approx(2 / ((4 - 2 * 3 / 7) / 1000), rel=0.02)
    without = pm.ServerModel(model.scaling, 1.0, 0.0, model.tails)
    assert without.predict(pm.Shape(2.0, workers=2), [8], host)[0].throughput_rps == (
        pytest.approx(host.cap_rps, rel=0.02))  # the host's own 10 ms


def test_fit_server_keeps_the_single_workers_cpu_per_request() -> None:
    levels = tuple(pm.Level(n, 5.0 * n, 5.0 * n, 6.0 * n, 200.0, cpu_ms=5.0 - n / 4)
                   for n in (1, 2, 4))
    half = tuple(pm.Level(lv.users, 2 * lv.mean_ms, 2 * lv.p50_ms, 2 * lv.p95_ms, 100.0)
                 for lv in levels)
    model = pm.fit_server([pm.Curve(pm.Shape(1.0), levels), pm.Curve(pm.Shape(0.5), half)])
    assert model.worker_cpu == ((1.0, 4.75), (2.0, 4.5), (4.0, 4.0))


def test_mm1_mean_response_is_one_over_mu_minus_lambda() -> None:
    q = po.Queue(servers=1, service_ms=10.0)  # mu = 0.1 per ms
    rate = 60.0  # 0.06 per ms
    response = q.mean_wait_ms(rate) + q.service_ms
    assert response == pytest.approx(1 / (0.1 - 0.06))


def test_erlang_c_against_table_values() -> None:
    # M/M/2 at 1 Erlang: 1/3; 3 servers at 2 Erlangs: 4/9 = 0.4444 (Erlang C tables).
    assert po.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert po.erlang_c(3, 2.0) == pytest.approx(0.4444, abs=1e-4)
    assert po.erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho


def test_erlang_c_refuses_an_unstable_queue() -> None:
    with pytest.raises(ValueError, match=r"offered load 2\.0"):
        po.erlang_c(2, 2.0)


def test_instances_for_rate_adds_instances_until_the_p95_holds() -> None:
    q = po.Queue(servers=1, service_ms=10.0)
    # One instance holds < 100 req/s; 150 req/s needs at least 2.
    k = po.instances_for_rate(q, 150.0, p95_slo_ms=40.0, service_p95_ms=20.0)
    assert k is not None and k >= 2
    assert po.response_quantile_ms(q, 150.0 / k, 0.95, 20.0) <= 40.0
    assert po.response_quantile_ms(q, 150.0 / (k - 1), 0.95, 20.0) > 40.0
    assert po.instances_for_rate(q, 150.0, p95_slo_ms=15.0, service_p95_ms=20.0) is None


def test_amdahl_fit_through_two_shapes_reproduces_them() -> None:
    s = pm.fit_scaling([(0.5, 60.0), (1.0, 100.0)])
    assert s.plateau_rps(0.5) == pytest.approx(60.0)
    assert s.plateau_rps(1.0) == pytest.approx(100.0)
    assert s.e == 0.0


def test_usl_fit_recovers_its_parameters() -> None:
    true = pm.Scaling(a=0.01, b=0.002, e=0.0005)
    pts = [(c, true.plateau_rps(c)) for c in (1.0, 2.0, 4.0, 8.0)]
    fit = pm.fit_scaling(pts)
    assert fit.plateau_rps(16.0) == pytest.approx(true.plateau_rps(16.0), rel=1e-6)


def test_scaling_through_one_plateau_keeps_it_and_applies_the_contention() -> None:
    s = pm.Scaling.through(2.0, 150.0, sigma=0.1)
    assert s.plateau_rps(2.0) == pytest.approx(150.0)
    assert s.sigma == pytest.approx(0.1)
    assert s.plateau_rps(8.0) == pytest.approx(150.0 * (8 / 1.7) / (2 / 1.1))


def test_service_and_delay_are_told_apart_by_a_fractional_cpu_shape() -> None:
    service, delay = pm.fit_alone([(0.5, 2.0 + 2 * 11.0), (1.0, 2.0 + 11.0)])
    assert service == pytest.approx(11.0)
    assert delay == pytest.approx(2.0)
    assert pm.fit_alone([(1.0, 13.0), (2.0, 13.0)]) == (pytest.approx(13.0), 0.0)


def test_scaling_needs_two_cpu_counts() -> None:
    with pytest.raises(ValueError, match="two or more CPU counts"):
        pm.fit_scaling([(1.0, 100.0), (1.0, 101.0)])


def test_fit_server_reproduces_a_curve_made_by_the_model() -> None:
    truth = pm.ServerModel(pm.Scaling(0.008, 0.0), 9.0, 1.5, pm.Tails(((1, 0.95, 1.4), (8, 0.95, 1.7))))
    users = [1, 2, 4, 8, 16]
    shapes = [pm.Shape(0.5, 1), pm.Shape(1.0, 1)]
    curves = [pm.Curve(s, tuple(truth.predict(s, users))) for s in shapes]
    fitted = pm.fit_server(curves)
    target = pm.Shape(2.0, 2)
    for got, want in zip(fitted.predict(target, users), truth.predict(target, users),
                         strict=True):
        # the fitted model carries the 1-CPU worker's measured curve as its flow-equivalent
        # server (the MVA solved backwards), so it reproduces the truth
        assert got.mean_ms == pytest.approx(want.mean_ms, rel=0.01)
        assert got.throughput_rps == pytest.approx(want.throughput_rps, rel=0.01)


def test_lambda_fit_and_flat_latency_up_to_the_limit() -> None:
    # duration = 2 + 8 / share: 512 MB -> share 0.2894
    pts = [(m, 2 + 8 / (m / MB_PER_VCPU)) for m in (512, 1024)]
    lam = po.fit_lambda(pts, overhead_ms=3.0)
    assert lam.duration_ms(1769) == pytest.approx(10.0)
    assert lam.extrapolated(1769) and not lam.extrapolated(768)
    levels = lam.predict(1769, [1, 8, 16, 32], limit=16)
    assert [lv.users for lv in levels] == [1, 8, 16]
    assert levels[-1].mean_ms == levels[0].mean_ms == pytest.approx(13.0)


def test_cold_starts_of_a_burst_follow_littles_law() -> None:
    assert po.concurrency(100.0, 50.0) == 5
    assert po.cold_starts_per_burst(100.0, 300.0, 50.0) == 10
    assert po.cold_starts_per_burst(100.0, 300.0, 50.0, warm=12) == 3


def test_batching_fit() -> None:
    a, b = po.fit_batching([(1, 3.0), (10, 12.0), (100, 102.0)])
    assert a == pytest.approx(2.0, abs=0.5)
    assert b == pytest.approx(1.0, rel=0.01)
    assert po.batch_throughput_rps(2.0, 1.0, 2) == pytest.approx(500.0)


def test_mape_skips_missing_measurements() -> None:
    assert pm.mape([11.0, 9.0, 5.0], [10.0, 10.0, math.nan]) == pytest.approx(10.0)


def test_two_workers_share_two_users_by_a_random_accept() -> None:
    # One worker: S = 10 ms, X_1(1) = 100/s, X_1(2) = 100/s (one CPU). Two users on two
    # workers, a fair coin per connection: both on one worker half the time (100/s), one each
    # otherwise (200/s).
    fair = pm.ServerModel(pm.Scaling(0.010, 0.0), 10.0, 0.0, pm.Tails(((1, 1.0, 1.0),)))
    assert fair.accept_alpha == pm.ACCEPT_ALPHA == math.inf
    [level] = fair.predict(pm.Shape(2.0, workers=2), [2])
    assert level.throughput_rps == pytest.approx(0.5 * 100 + 0.5 * 200)
    [spread] = fair.predict(pm.Shape(1.0, instances=2), [2])  # the balancer spreads them
    assert spread.throughput_rps == pytest.approx(200.0)
    # alpha = 1: the splits 2/0, 1/1, 0/2 equally likely, so both share a worker 2/3 of the time
    uneven = replace(fair, accept_alpha=1.0)
    [level] = uneven.predict(pm.Shape(2.0, workers=2), [2])
    assert level.throughput_rps == pytest.approx(2 / 3 * 100 + 1 / 3 * 200)


def test_share_probabilities_are_beta_binomial() -> None:
    assert pm.share_probabilities(4, 2, math.inf) == pytest.approx(
        [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])
    assert pm.share_probabilities(4, 2, 1.0) == pytest.approx([0.2] * 5)  # every split alike
    assert sum(pm.share_probabilities(11, 4, 0.7)) == pytest.approx(1.0)
    assert pm.share_probabilities(3, 1, 0.5) == [0.0, 0.0, 0.0, 1.0]
    assert pm.share_probabilities(30, 2, 1e6) == pytest.approx(
        pm.share_probabilities(30, 2, math.inf), abs=1e-5)
    with pytest.raises(ValueError, match="alpha > 0"):
        pm.share_probabilities(3, 2, 0.0)


def test_the_accept_concentration_is_fitted_by_maximum_likelihood() -> None:
    # Splits of 2 connections over 2 workers: P(2/0 or 0/2) = (alpha + 1) / (2 alpha + 1).
    # 2 of 3 splits uneven is the MLE of that probability, so alpha = 1.
    assert pm.fit_accept_alpha([[2], [2], [1, 1]] * 10, 2) == pytest.approx(1.0, rel=0.01)
    # as even as a fair coin (or more): no concentration fits better than the coin
    assert pm.fit_accept_alpha([[1, 1], [2]] * 10, 2) == math.inf
    assert pm.split_log_likelihood([[1, 1]], 2, math.inf) == pytest.approx(math.log(0.5))
    with pytest.raises(ValueError, match="cannot be"):
        pm.split_log_likelihood([[1, 1, 1]], 2, 1.0)


def test_tails_interpolate_between_measured_loads_and_hold_flat_beyond() -> None:
    tails = pm.fit_tails([(1, 1.0, 1.2), (1, 1.0, 1.4), (4, 0.9, 1.6)])
    assert tails.at(1) == pytest.approx((1.0, 1.3))  # two points at one load: their mean
    assert tails.at(2.5) == pytest.approx((0.95, 1.45))
    assert tails.at(0.5) == pytest.approx((1.0, 1.3))
    assert tails.at(16) == pytest.approx((0.9, 1.6))


def test_tails_come_from_the_fitted_shape_with_a_whole_cpu_per_worker() -> None:
    def curve(cpus: float, ratio: float) -> pm.Curve:
        levels = tuple(pm.Level(n, 10.0 * n, 10.0 * n, ratio * 10.0 * n, 100.0)
                       for n in (1, 2, 4))
        return pm.Curve(pm.Shape(cpus), levels)

    model = pm.fit_server([curve(0.5, 3.0), curve(1.0, 1.4)])
    assert model.tails.at(2) == pytest.approx((1.0, 1.4))  # not the throttled 3.0


def test_the_generator_lock_is_a_queue_in_front_of_every_lambda_environment() -> None:
    # Dc = 3, Z = 3: n = 1 no wait; n = 2: Qc(1) = 3/6 = 0.5, Rc = 3 x 1.5 = 4.5, wait 1.5.
    assert po.client_waits_ms(3.0, 6.0, 2) == pytest.approx([0.0, 1.5])
    assert po.client_waits_ms(0.0, 6.0, 3) == [0.0, 0.0, 0.0]
    lam = po.LambdaModel(a=2.0, b=0.0, overhead_ms=4.0, lo=0.2, hi=1.0)
    host = pm.Host(cores=2, background_cores=0.0, client_ms=3.0, target_ms=1.0)
    assert [lv.mean_ms for lv in lam.predict(1769, [1, 2], host=host)] == pytest.approx(
        [6.0, 7.5])


def test_the_invoke_fronts_ceiling_caps_lambda_on_the_measuring_host_only() -> None:
    # R = 4 + 2 = 6 ms alone; 3 users at a 250/s front: R(3) = 3 / 250 = 12 ms.
    lam = po.LambdaModel(a=2.0, b=0.0, overhead_ms=4.0, lo=0.2, hi=1.0, ceiling_rps=250.0)
    host = pm.Host(cores=2, background_cores=0.0, client_ms=0.0, target_ms=1.0)
    here = lam.predict(1769, [1, 3], host=host)
    assert [lv.mean_ms for lv in here] == pytest.approx([6.0, 12.0])
    assert here[1].throughput_rps == pytest.approx(250.0)
    assert [lv.mean_ms for lv in lam.predict(1769, [1, 3])] == pytest.approx([6.0, 6.0])


def test_a_measured_worker_curve_is_its_flow_equivalent_server() -> None:
    # One worker, no delay: with every user at the worker, X(n) = mu(n); 3 users interpolated.
    levels = [pm.Level(1, 10.0, 10.0, 12.0, 100.0), pm.Level(2, 16.0, 16.0, 20.0, 125.0),
              pm.Level(4, 25.0, 25.0, 30.0, 160.0), pm.Level(8, 80.0, 80.0, 90.0, 100.0)]
    mu = pm.flow_equivalent(levels, 0.0)
    assert mu[:4] == pytest.approx((0.100, 0.125, 0.1425, 0.160))
    assert mu[4:] == pytest.approx((0.160,) * 4)  # a measured dip is not a slowdown to carry
    half = tuple(pm.Level(lv.users, 2 * lv.mean_ms, 2 * lv.p50_ms, 2 * lv.p95_ms,
                          lv.throughput_rps / 2) for lv in levels)
    model = pm.fit_server([pm.Curve(pm.Shape(0.5), half), pm.Curve(pm.Shape(1.0), tuple(levels))])
    assert model.worker_curve and model.curve_cpus == 1.0
    predicted = model.predict(pm.Shape(1.0), [1, 2, 4])
    assert [lv.throughput_rps for lv in predicted] == pytest.approx([100.0, 125.0, 160.0],
                                                                    rel=0.02)


def test_contention_caps_what_workers_reach_together_not_a_request_alone() -> None:
    model = pm.ServerModel(pm.Scaling(0.010, 0.004), 10.0, 0.0, pm.Tails(((1, 1.0, 1.0),)))
    [alone_small] = model.predict(pm.Shape(1.0), [1])
    [alone_big] = model.predict(pm.Shape(8.0, workers=8), [1])
    assert alone_big.mean_ms == pytest.approx(alone_small.mean_ms)  # 10 ms on either
    [busy] = model.predict(pm.Shape(8.0, workers=8), [64])
    assert busy.throughput_rps == pytest.approx(model.scaling.plateau_rps(8.0), rel=0.02)
    assert busy.throughput_rps < 8 * model.scaling.plateau_rps(1.0) / 2
