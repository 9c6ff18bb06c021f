"""``niser-mlops power-tune``: bad options named, and one run of the command against a real moto
server and the local Lambda stand-in with the tiny registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from bench.cli import bench
from flows.cli import main
from tests.deployers.conftest import _fresh_moto_state, moto_server  # noqa: F401 (fixtures)

SIZES = (512, 1024)


def run(*args: str) -> Any:
    return CliRunner().invoke(bench, ["power-tune", *args])


@pytest.mark.parametrize(("argv", "option", "value"), [
    (["--memory", "64,512"], "--memory", "64"),
    (["--memory", "512,20000"], "--memory", "20000"),
    (["--memory", "512,abc"], "--memory", "512,abc"),
    (["--memory", "512,1024,512"], "--memory", "512,1024,512"),
    (["--invocations", "4"], "--invocations", "4 invocations"),
    (["--balanced-weight", "1.5"], "--balanced-weight", "1.5"),
    (["--architecture", "sparc"], "--architecture", "sparc"),
])
def test_bad_options_exit_2_naming_the_option_and_the_value(argv, option, value):
    result = run(*argv)
    assert result.exit_code == 2
    assert option in result.stderr and value in result.stderr


def test_power_tune_is_a_niser_mlops_command():
    assert "power-tune" in main.commands


def _write_dataset(data: Any, folder: Path) -> Path:
    """``data``'s test prefixes as a preprocessed folder holding RAW item ids (an identity
    vocabulary then hands the model the ids it knows)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for prefix, target in zip(data.test.sessions(), data.test.targets, strict=True):
        raw = data.vocab.decode(prefix).tolist()
        lines.append((raw, int(data.vocab.decode([target])[0])))
    (folder / "test.tsv").write_text(
        "".join(f"{' '.join(map(str, p))}\t{t}\n" for p, t in lines))
    (folder / "train_sessions.txt").write_text(
        "".join(f"{' '.join(map(str, [*p, t]))}\n" for p, t in lines))
    return folder


@pytest.fixture(scope="module")
def tuned(moto_server, tracking_uri, registered_model_uri, tiny_training,  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The command's result after one run at 512 and 1024 MB."""
    from deployers import standins

    dataset = _write_dataset(tiny_training[0], tmp_path_factory.mktemp("tiny-dataset"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NISER_LAMBDA_STATE_DIR", str(tmp_path_factory.mktemp("lambda-state")))
        try:
            yield run("--model-uri", registered_model_uri, "--dataset", str(dataset),
                      "--memory", ",".join(map(str, SIZES)), "--invocations", "5",
                      "--warmup", "1", "--cold-starts", "1", "--batch", "8",
                      "--probe-seconds", "0.5", "--experiment", "power-tune-test")
        finally:
            standins.current().close()


def _runs(tracking_uri: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("power-tune-test")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@pytest.mark.slow
def test_the_table_has_a_row_per_size_and_names_the_picks_last(tuned):
    assert tuned.exit_code == 0, tuned.output
    lines = tuned.stdout.strip().splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == list(SIZES)
    assert all(r[-1] == "measured-local" for r in rows)
    assert all(r[3] != "n/a" for r in rows), "every size reports its Init Duration"
    last = lines[-1]
    assert last.startswith("picks: cost ") and "speed" in last and "balanced" in last
    picked = [int(w) for w in last.replace(",", " ").split() if w.isdigit()]
    assert len(picked) == 3 and set(picked) <= set(SIZES)


@pytest.mark.slow
def test_mlflow_holds_a_child_run_per_size_with_step_memory(tuned, tracking_uri):
    assert tuned.exit_code == 0, tuned.output
    parent, children = _runs(tracking_uri)
    client = MlflowClient(tracking_uri)
    assert sorted(int(c.data.tags["memory_mb"]) for c in children) == list(SIZES)
    for child in children:
        memory = int(child.data.tags["memory_mb"])
        assert child.data.tags["provenance"] == "measured-local"
        assert "shaping" in child.data.tags
        for metric in ("duration_p50_ms", "duration_p95_ms", "init_ms", "cost_per_1m_usd",
                       "cpu_share_configured"):
            history = client.get_metric_history(child.info.run_id, metric)
            assert [h.step for h in history] == [memory], metric
    steps = sorted(h.step for h in client.get_metric_history(parent.info.run_id,
                                                             "cost_per_1m_usd"))
    assert steps == list(SIZES)
    assert {parent.data.tags[f"pick.{s}"] for s in ("cost", "speed", "balanced")} <= \
        {str(s) for s in SIZES}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/power_tune.png" in artifacts


@pytest.mark.slow
def test_the_measured_cpu_share_stays_under_the_configured_one(tuned, tracking_uri):
    assert tuned.exit_code == 0, tuned.output
    _, children = _runs(tracking_uri)
    if all(c.data.tags.get("shaping") == "none" for c in children):
        pytest.skip("LambdaDeployer.usage() is None here (the Lambda stand-in does not shape "
                    "its environments, or this machine cannot): no CPU reading to compare")
    for child in children:
        configured = child.data.metrics["cpu_share_configured"]
        measured = child.data.metrics["cpu_share_measured"]
        assert 0 < measured <= configured * 1.15, "a CPU quota is a ceiling"
