"""Open the pages a reader of a benchmark needs in headless Chromium, check each works, and
screenshot it.

    . .state/env.sh && python scripts/ui_screenshots.py --out docs/screenshots

takes the latest benchmark run of experiment ``niser`` on the running services (``./run.sh``)
and writes, after checking what each must show (``UICheckError`` says what is missing):

- ``prefect-flow-run.png``: the flow run's page in the Prefect UI, *Artifacts* tab: no
  "Can't connect to Server API" error, the ``benchmark-summary`` artifact listed;
- ``mlflow-benchmark-run.png``: the benchmark run's page the flow prints, MLflow's classic view:
  its description opens with the recommendation and its provenance;
- ``mlflow-latency-chart.png``: the chart the description links to, reached in at most two
  clicks: one line per target for ``latency_p50_ms`` and ``latency_p95_ms``.

Chromium is Debian's ``chromium`` (``scripts/setup.sh`` installs it with the test extra),
driven by Playwright's Python package with ``executable_path``: Playwright cannot download its
own browsers here. ``NISER_CHROMIUM`` names another binary. The test suite runs the same checks
after a tiny run on its own servers (``tests/flows/test_browser.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIEWPORT = {"width": 1400, "height": 1000}
TIMEOUT_MS = 30_000
CHART_LINK = "latency p50 and p95 of all targets"


class UICheckError(AssertionError):
    """A page does not show what it must."""


@dataclass(frozen=True)
class Pages:
    """The two URLs a run prints and what their pages must show."""

    prefect_flow_run: str
    mlflow_benchmark_run: str
    targets: Sequence[str]
    recommendation: str  # the first words of the description's headline


def chromium() -> str | None:
    """The Chromium binary to drive, or None when none is installed."""
    for name in (os.environ.get("NISER_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``); ``RuntimeError`` when there is none."""
    from playwright.sync_api import sync_playwright

    exe = chromium()
    if exe is None:
        raise RuntimeError("no Chromium: `apt-get install -y chromium` (scripts/setup.sh does "
                           "it for the test extra) or set NISER_CHROMIUM")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _visible(page: Any, text: str, what: str) -> None:
    try:
        page.get_by_text(text).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    except Exception as exc:
        raise UICheckError(f"{what}: {text!r} not visible at {page.url}") from exc


def check_prefect(b: Any, url: str, out: Path) -> Path:
    """The flow run's page: no connection error, the benchmark-summary artifact listed."""
    page = b.new_page(viewport=VIEWPORT)
    page.goto(url)
    _visible(page, "Artifacts", "Prefect flow run page")
    if page.get_by_text("Can't connect to Server API").count():
        raise UICheckError(f"the Prefect UI at {url} cannot reach its API")
    page.get_by_text("Artifacts", exact=True).first.click()
    _visible(page, "benchmark-summary", "Prefect flow run, Artifacts tab")
    _visible(page, "mlflow-run", "Prefect flow run, Artifacts tab")
    path = out / "prefect-flow-run.png"
    page.screenshot(path=str(path))
    page.close()
    return path


def _close_assistant(page: Any) -> None:
    """Close MLflow's assistant side panel, when it is open, so the page has room."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def check_mlflow(b: Any, pages: Pages, out: Path) -> tuple[Path, Path]:
    """The benchmark run's description with the recommendation, and its chart link."""
    page = b.new_page(viewport=VIEWPORT)
    page.goto(pages.mlflow_benchmark_run)
    _visible(page, pages.recommendation, "MLflow benchmark run, description")
    _visible(page, "measured-", "MLflow benchmark run, provenance")
    _close_assistant(page)
    run_png = out / "mlflow-benchmark-run.png"
    page.screenshot(path=str(run_png))
    clicks = 0
    link = page.get_by_role("link", name=CHART_LINK)
    if not (link.count() and link.first.is_visible()):
        page.get_by_text("Show more").first.click()
        clicks += 1
    with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
        link.first.click()
        clicks += 1
    chart = opened.value
    chart_png = check_chart(chart, pages.targets, out)
    if clicks > 2:
        raise UICheckError(f"the chart took {clicks} clicks from the run page")
    page.close()
    return run_png, chart_png


def check_chart(page: Any, targets: Sequence[str], out: Path) -> Path:
    """MLflow's metric chart: a p50 and a p95 line for every target."""
    page.set_viewport_size(VIEWPORT)
    for target in targets:
        for metric in ("latency_p50_ms", "latency_p95_ms"):
            _visible(page, f"{target} ({metric})", "MLflow metric chart legend")
    # MLflow's own legend names each line; plotly draws each of them as more than one trace
    # (plotly redraws after the legend shows: the counts are awaited, not read once mid-redraw)
    charts = page.locator(".js-plotly-plot")
    traces = page.locator(".js-plotly-plot .scatterlayer .trace")
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.js-plotly-plot').length === 1 && document"
            ".querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= n",
            arg=2 * len(targets), timeout=TIMEOUT_MS)
    except Exception as exc:
        raise UICheckError(f"{charts.count()} charts with {traces.count()} traces, not one "
                           f"chart with a p50 and a p95 line for each of {list(targets)}"
                           ) from exc
    _close_assistant(page)
    path = out / "mlflow-latency-chart.png"
    page.screenshot(path=str(path))
    page.close()
    return path


def check_all(pages: Pages, out: Path) -> dict[str, Path]:
    """Every check of the module docstring; the screenshots by page."""
    out.mkdir(parents=True, exist_ok=True)
    with browser() as b:
        prefect = check_prefect(b, pages.prefect_flow_run, out)
        run, chart = check_mlflow(b, pages, out)
    return {"prefect": prefect, "mlflow_run": run, "mlflow_chart": chart}


def latest(experiment: str) -> Pages:
    """The pages of the latest benchmark run of ``experiment`` on the servers in the env."""
    from bench.links import run_url, ui_base
    from bench.report import latest_benchmark_run

    base = ui_base(os.environ.get("MLFLOW_TRACKING_URI", ""))
    api = os.environ.get("PREFECT_API_URL", "")
    if base is None or not api.startswith("http"):
        raise SystemExit("MLFLOW_TRACKING_URI and PREFECT_API_URL must name the running "
                         "servers: `. .state/env.sh` first")
    latest = latest_benchmark_run(experiment)
    if latest is None:
        raise SystemExit(f"no benchmark run in experiment {experiment!r}: run ./run.sh first")
    run = latest
    return Pages(f"{api.removesuffix('/api')}/runs/flow-run/{run.data.tags['prefect.flow_run_id']}",
                 run_url(base, run.info.experiment_id, run.info.run_id),
                 run.data.tags["benchmark.targets"].split(","), "Recommended")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    p.add_argument("--experiment", default="niser")
    a = p.parse_args()
    for name, path in check_all(latest(a.experiment), a.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
