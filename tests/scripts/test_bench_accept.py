"""``scripts/bench_accept.py``: a worker's connections are read from ``ss`` by the server's port,
and a split of fewer than two workers is refused."""

from __future__ import annotations

import subprocess
import sys

from tests.scripts import SCRIPTS, load_script

SCRIPT = SCRIPTS / "bench_accept.py"

SS = """\
0      0      127.0.0.1:41993  127.0.0.1:60518 users:(("python",pid=9582,fd=21))
0      0      127.0.0.1:41993  127.0.0.1:60528 users:(("python",pid=9582,fd=22))
0      0      127.0.0.1:41993  127.0.0.1:60534 users:(("python",pid=9583,fd=20))
0      0      127.0.0.1:60518  127.0.0.1:41993 users:(("python",pid=9560,fd=7))
0      0      127.0.0.1:50639  127.0.0.1:59796 users:(("mlflow",pid=8313,fd=9))
0      0      127.0.0.1:419930 127.0.0.1:1234  users:(("python",pid=1,fd=9))
"""


def test_the_split_counts_each_workers_connections_on_the_servers_port_only() -> None:
    # the client's own end (local port 60518) and other servers' connections are not counted
    assert load_script("bench_accept").worker_split(SS, 41993) == [2, 1]
    assert load_script("bench_accept").worker_split("", 41993) == []


def test_one_worker_is_refused() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--workers", "1"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--workers must be >= 2" in done.stderr
