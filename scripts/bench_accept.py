"""How a scoring server's uvicorn workers share keep-alive connections: the split the performance
model assumes (``bench.perfmodel.ACCEPT_ALPHA``).

A scoring server with ``w`` workers (``mlflow models serve -w``: uvicorn, one listening socket
shared by the worker processes) keeps each keep-alive connection on the worker that accepted
it, and which one accepts is a race. This script measures the split on the real thing: it
deploys ``--model-uri`` with the local deployer as ``predict-check``'s two-worker shape (one
instance, ``--workers`` workers, ``cpus`` = workers, one torch thread each), ``--deployments``
times one after another. In each, ``--rounds`` times for every user count, it runs a
closed-loop level of the product's load generator (``bench.closed_loop``, a new invoker per
level, so new connections, as every benchmark level opens them) and, in the middle of its
window, counts each worker's established connections on the scoring server's port
(``ss -tnp``): the connections the deployment's front door (nginx) keeps open to it, one per
request in flight. Prints every split, the maximum-likelihood concentration of a symmetric
Dirichlet-multinomial split and the log-likelihood of the splits under it and under the fair
coin (one per connection, ``alpha`` infinite), and writes them as JSON with ``--out``.
Each deployment is torn down after its levels, also on an error. Run it on a quiet machine,
as ``predict-check`` is run.

    . .state/env.sh
    python scripts/bench_accept.py --model-uri models:/niser-digi/1 \\
        --dataset ../shared/data/diginetica --deployments 8 \\
        --out benchmarks/results/accept_split.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from bench import provenance
from bench.closed_loop import closed_loop
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.perfmodel_laws import fit_accept_alpha, split_log_likelihood
from deployers.local.deployer import LocalDeployer
from niser.raw import load_dataset

LEVEL = LoadSettings(warmup_s=0.5, duration_s=1.5, timeout_s=10.0)
PID = re.compile(r"pid=(\d+)")


def worker_split(ss_output: str, port: int) -> list[int]:
    """Established connections per process on local ``port`` (largest first), from the output
    of ``ss -tnpH state established``: a line's third field is the local address, its
    ``users:(("name",pid=N,fd=M))`` the owner."""
    owners: Counter[str] = Counter()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[2].endswith(f":{port}"):
            continue
        owner = PID.search(line)
        if owner:
            owners[owner.group(1)] += 1
    return sorted(owners.values(), reverse=True)


def one_split(deployer: LocalDeployer, name: str, port: int, payloads: Payloads,
              users: int) -> list[int]:
    invoker = deployer.invoker(name)
    done = threading.Thread(target=closed_loop, args=(invoker, payloads, users, LEVEL))
    done.start()
    time.sleep(LEVEL.warmup_s + LEVEL.duration_s / 2)
    ss = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True,
                        text=True, check=True).stdout
    done.join()
    invoker.close()
    return worker_split(ss, port)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-uri", default="models:/niser@champion")
    p.add_argument("--dataset", default="synthetic", help="whose test sessions are the payloads")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--users", default="2,3,4,6,8,11,16", help="comma-separated user counts")
    p.add_argument("--rounds", type=int, default=1,
                   help="splits measured per user count and deployment")
    p.add_argument("--deployments", type=int, default=6,
                   help="deployments measured one after another (a deployment's front door "
                        "keeps its connections to the workers, so its splits hang together)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if a.rounds < 1 or a.deployments < 1:
        p.error(f"--rounds and --deployments must be >= 1, got {a.rounds}, {a.deployments}")
    if a.workers < 2:
        p.error(f"--workers must be >= 2 (a split needs two workers), got {a.workers}")
    users = [int(u) for u in a.users.split(",")]
    if any(u < 2 for u in users):
        p.error(f"--users must all be >= 2, got {a.users!r}")
    data = load_dataset(a.dataset)
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
    deployer = LocalDeployer()
    label = provenance.of_target(deployer.name)
    print(f"every figure below is {provenance.describe(label)} "
          "(here: the local deployer's scoring server)", flush=True)
    splits: dict[int, list[list[int]]] = {n: [] for n in users}
    for d in range(a.deployments):
        endpoint = deployer.deploy(a.model_uri, {"cpus": float(a.workers), "workers": a.workers,
                                                 "torch_threads": 1, "instances": 1})
        # the scoring server's own port: the endpoint's URL is the front door (nginx) before
        # it, whose upstream connections are the ones the workers race for
        [port] = deployer.describe(endpoint.name).details["ports"]
        try:
            for n in users:
                got = [one_split(deployer, endpoint.name, port, payloads, n)
                       for _ in range(a.rounds)]
                splits[n] += got
                print(f"deployment {d + 1}, {n:3d} users: "
                      + " ".join("/".join(map(str, s)) for s in got), flush=True)
        finally:
            deployer.teardown(endpoint.name)
    observed = [s for ss in splits.values() for s in ss]
    alpha = fit_accept_alpha(observed, a.workers)
    fair = split_log_likelihood(observed, a.workers, float("inf"))
    fitted = split_log_likelihood(observed, a.workers, alpha)
    print(f"{a.model_uri}, {a.workers} workers, {len(observed)} splits from {a.deployments} "
          "deployments")
    print(f"maximum-likelihood concentration alpha = {alpha:.3f} "
          f"(log-likelihood {fitted:.1f}; fair coin per connection: {fair:.1f})")
    if a.out:
        a.out.write_text(json.dumps({"provenance": label, "model_uri": a.model_uri,
                                     "workers": a.workers,
                                     "deployments": a.deployments, "rounds": a.rounds,
                                     "splits": splits, "alpha": alpha,
                                     "log_likelihood": fitted,
                                     "log_likelihood_fair": fair}, indent=1))


if __name__ == "__main__":
    main()
