"""In a real browser (headless Chromium), after a tiny train-and-benchmark on the project's own
services, the three pages a reader needs work: the Prefect flow run (no connection error, the
benchmark-summary artifact), the MLflow benchmark run (the description opens with the
recommendation) and, one click away, the latency chart with a line per target.

The services are the ones ``./run.sh`` starts (``scripts/services.py``, in a temporary state
directory): ``prefect_test_harness`` serves no UI and the SQLite tracking store of the other flow
tests has none. Skips with the reason when Playwright or Chromium is missing. Screenshots go to
``$NISER_SCREENSHOTS`` when set (e.g. ``docs/screenshots``), else to a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui() -> ModuleType:
    """``scripts/ui_screenshots.py``, once Chromium is known to start here."""
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright is not installed: pip install -e '.[test]'")
    module = load_script("ui_screenshots")
    if module.chromium() is None:
        pytest.skip("no Chromium binary: apt-get install -y chromium (scripts/setup.sh does it)")
    try:
        with module.browser():
            pass
    except Exception as exc:
        pytest.skip(f"Chromium does not start here: {type(exc).__name__}: {exc}")
    return module


def _env_file(path: Path) -> dict[str, str]:
    import shlex

    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines()
             if line.startswith("export "))
    return {k: shlex.split(v)[0] if v else "" for k, v in pairs}  # values are shell-quoted


@pytest.fixture(scope="module")
def services(ui, tmp_path_factory) -> Iterator[dict[str, str]]:
    """MLflow and Prefect servers started by scripts/services.py; stopped afterwards."""
    state = tmp_path_factory.mktemp("services")
    env = {k: v for k, v in os.environ.items() if k not in (
        "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME", "PREFECT_UI_API_URL")}
    env |= {"NISER_STATE_DIR": str(state), "NISER_AWS": "real", "PYTHONPATH": str(REPO)}
    script = str(REPO / "scripts" / "services.py")
    started = subprocess.run([sys.executable, script, "start", "--no-runner"], env=env,
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**env, **_env_file(state / "env.sh")}
    finally:
        subprocess.run([sys.executable, script, "stop"], env=env, capture_output=True,
                       timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def tiny_run(services) -> dict[str, object]:
    """The links the flow printed, its recommendation and its targets."""
    done = subprocess.run([sys.executable, "-m", "tests.flows.browser_run"], env=services,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["links"]["mlflow"] and summary["links"]["prefect"], summary
    return summary


@pytest.fixture(scope="module")
def chromium(ui) -> Iterator[object]:
    with ui.browser() as b:
        yield b


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = Path(os.environ.get("NISER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_printed_links_open_the_classic_mlflow_view_and_the_prefect_flow_run(tiny_run):
    links = tiny_run["links"]
    assert "workflowType=machine_learning" in links["mlflow"]  # type: ignore[index]
    assert "/runs/flow-run/" in links["prefect"]  # type: ignore[index]


def test_prefect_flow_run_page_connects_and_lists_the_benchmark_summary(ui, chromium, tiny_run,
                                                                         out):
    shot = ui.check_prefect(chromium, tiny_run["links"]["prefect"], out)  # type: ignore[index]
    assert shot.stat().st_size > 20_000


def test_mlflow_benchmark_run_opens_on_the_recommendation_and_its_chart_shows_every_target(
        ui, chromium, tiny_run, out):
    links = tiny_run["links"]
    pages = ui.Pages(links["prefect"], links["mlflow"], tiny_run["targets"],  # type: ignore[index]
                     "Recommended: 1× inproc-")
    run, chart = ui.check_mlflow(chromium, pages, out)
    assert run.stat().st_size > 20_000 and chart.stat().st_size > 20_000
