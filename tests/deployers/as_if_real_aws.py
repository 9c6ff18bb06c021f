"""``niser-mlops`` with every target scheduled as if it were a real AWS endpoint.

Run as ``python -m tests.deployers.as_if_real_aws benchmark ...``: the stand-ins are then
benchmarked in parallel (``bench.fanout``), which is what a real account's targets get; only the
schedule is told so, every figure keeps its own provenance. For the cancel test of that path.
"""

from __future__ import annotations

import functools

import flows.train_and_benchmark as tab
from bench import fanout
from flows.cli import main

tab.schedule = functools.partial(fanout.schedule, source=lambda deployer: "measured-real")

if __name__ == "__main__":
    main()
