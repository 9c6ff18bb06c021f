"""``scripts/bench_accept.py`` against a real uvicorn with two workers: every split it reports
is one of the user counts asked, over at most two workers, the fit is printed and written, and
the server it started is gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_probe_measures_splits_over_two_workers_and_stops_its_server(tmp_path: Path) -> None:
    out = tmp_path / "split.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_accept.py"), "--workers", "2",
         "--users", "2,4", "--rounds", "3", "--requests", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=True)
    assert "maximum-likelihood concentration alpha = " in done.stdout
    report = json.loads(out.read_text())
    assert set(report["splits"]) == {"2", "4"}
    for users, splits in report["splits"].items():
        assert len(splits) == 3
        assert all(sum(s) == int(users) and 1 <= len(s) <= 2 for s in splits)
    assert report["alpha"] > 0
    assert not any("bench_accept:app" in _cmdline(pid) for pid in os.listdir("/proc")
                   if pid.isdigit())


def test_one_worker_is_refused() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_accept.py"),
                           "--workers", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers must be >= 2" in done.stderr


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
