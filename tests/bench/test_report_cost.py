
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench import prices
from bench.clock import FakeClock
from bench.cost import cost_per_million_at_load
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.report import TargetRun, log_benchmark
from bench.report_cost import cost_hook
from bench.rounding import significant
from bench.sweep import sweep
from deployers.base import CostDrivers, Description
from tests.bench.support import answers_after


@pytest.fixture(scope="module")
def targets():
    settings = LoadSettings(warmup_s=0.02, duration_s=0.15, timeout_s=1.0)
    clock = FakeClock()
    payloads = Payloads([[i] for i in range(1, 100)])
    inst = TargetRun("c5", sweep(answers_after(clock, 0.003), payloads, [1, 2], settings, clock=clock),
                     Description("sagemaker", "ep", "InService",
                                 CostDrivers(kind="instance", instance_type="ml.c5.xlarge",
                                             instance_count=1)),
                     provenance="measured-local")
    lam = TargetRun("fn", sweep(answers_after(clock, 0.004), payloads, [1, 2], settings, clock=clock),
                    Description("lambda", "fn", "Active",
                                CostDrivers(kind="lambda", memory_mb=3008,
                                            architecture="x86_64")),
                    provenance="measured-local")
    local = TargetRun("box", sweep(answers_after(clock, 0.003), payloads, [1, 2], settings, clock=clock),
                      Description("local", "box", "running", CostDrivers(kind="local", cpus=2)))
    return [inst, lam, local]


@pytest.fixture
def client(tmp_path):
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    c = MlflowClient()
    c.create_experiment("cost-test", artifact_location=(tmp_path / "a").as_uri())
    yield c
    mlflow.set_tracking_uri(old)


def test_cost_hook_prices_each_level_at_its_served_load(targets, client):
    table = prices.load()
    run = log_benchmark(targets, slo_ms=100, experiment_name="cost-test",
                        hooks=[cost_hook(table)])
    inst_id = run.child_run_ids["c5"]
    stats = targets[0].sweep.stats()
    hist = {h.step: h.value for h in client.get_metric_history(inst_id, "cost_per_1m_usd")}
    for st in stats:
        want = cost_per_million_at_load(targets[0].description.cost, table,
                                        served_rps=st.throughput_rps)
        assert hist[int(st.level)] == significant(want, 4)  # USD to 4 significant digits
    inst = client.get_run(inst_id).data.metrics
    assert inst["cost_per_hour_usd"] == pytest.approx(table.instance_hourly("ml.c5.xlarge").usd)
    assert "cost_per_1m_usd_at_saturation" in inst
    # Lambda (4 ms, 3008 MB) costs ~0.0014 USD/h per req/s: it crosses $0.204/h near 130 req/s,
    # well inside the plotted range of 4x the instance's saturation.
    assert 50 < inst["breakeven_rps.fn"] < 4 * inst["saturation_throughput_rps"]

    lam_hist = client.get_metric_history(run.child_run_ids["fn"], "cost_per_1m_usd")
    assert sorted(h.step for h in lam_hist) == [1, 2] and all(h.value > 0 for h in lam_hist)

    # local machines have no price until the user sets one: no figure, a note instead
    assert client.get_metric_history(run.child_run_ids["box"], "cost_per_1m_usd") == []
    arts = {a.path for a in client.list_artifacts(run.parent_run_id)}
    assert "cost_notes.json" in arts
    plots = {a.path for a in client.list_artifacts(run.parent_run_id, "plots")}
    assert {"plots/cost_per_1m_vs_concurrency.png", "plots/breakeven_c5_vs_fn.png",
            "plots/breakeven_box_vs_fn.png"} - plots == {"plots/breakeven_box_vs_fn.png"}


def test_local_prices_set_by_the_user_are_used(targets, client):
    table = prices.load().with_local(per_core_hour=0.05)
    run = log_benchmark(targets[2:], slo_ms=100, experiment_name="cost-test",
                        hooks=[cost_hook(table)])
    m = client.get_run(run.child_run_ids["box"]).data.metrics
    assert m["cost_per_hour_usd"] == pytest.approx(2 * 0.05)


def test_predicted_shapes_get_a_break_even_against_lambda_with_its_band(tmp_path):
    from bench.hooks import TargetSummary
    from bench.report_predict import Validation
    from bench.stats import LevelStats

    def level(n: int, x: float) -> LevelStats:
        mean = 1000 * n / x
        return LevelStats(level=n, count=100, ok=100, errors=0, timeouts=0, mean_ms=mean,
                          p50_ms=mean, p90_ms=1.2 * mean, p95_ms=1.3 * mean, p99_ms=1.5 * mean,
                          max_ms=2 * mean, throughput_rps=x, error_rate=0.0, window_s=1.0)

    sm = TargetSummary("sm", "closed", [level(1, 111), level(2, 200), level(4, 210)], 210.0,
                       None, Description("sagemaker", "sm", "InService",
                                         CostDrivers("instance", "ml.c5.large", 1)),
                       "measured-local")
    lam = TargetSummary("fn", "closed", [level(1, 150), level(2, 300)], 300.0, 0.5,
                        Description("lambda", "fn", "Active",
                                    CostDrivers("lambda", memory_mb=1024)), "measured-local",
                        {"lambda_billed_ms_mean": 6.0})
    validation = Validation("run-1", {"prediction_mape_throughput": 12.0})
    out = cost_hook(validation=validation)([sm, lam], 50.0, tmp_path)
    key = "breakeven_rps.predicted-c5-2xlarge.fn"
    mid, low, high = (out.parent_metrics[key + s] for s in ("", "_low", "_high"))
    # Lambda at 6 ms reaches one ml.c5.2xlarge's price below what that instance holds, so
    # the break-even is the same whichever way the throughput is off; never in the wrong order
    assert mid == pytest.approx(low) and mid == pytest.approx(high)
    plots = {p.name for _, p in out.files}
    assert "breakeven_predicted-c5-2xlarge_vs_fn.png" in plots
    assert cost_hook()([sm, lam], 50.0, tmp_path).parent_metrics == {}  # no validation
