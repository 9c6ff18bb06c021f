"""Lambda package size, cold start and warm latency on the local Lambda stand-in.

    python scripts/bench_lambda.py [--recommender DIR] [--cold 5] [--warm 500] [--memory 1769]
    python scripts/bench_lambda.py --cold 1 --warm 50 --oom-batch 512 --oom-memory 128

Without ``--recommender`` the model is a randomly initialised NISER of Diginetica's size
(43,098 x 100: the package and latency depend on the size, not on the weights). Payloads are
real Diginetica test prefixes when ``../shared/data`` exists, else random sessions. Prints:
package size unzipped/zipped for x86_64 and arm64; per cold start the Init Duration (REPORT) and
the client-side time to the first answer; warm boto3 ``lambda.invoke`` p50/p90/p99 at one
session per request, with the handler's own Duration p50; the peak memory of the warm
environment after those invokes: REPORT's Max Memory Used (the environment's cgroup peak when
the stand-in is shaped, i.e. run as root with a writable cgroup tree; else VmHWM) and the
process's peak resident set (VmHWM), which also counts shared libraries the cgroup was not
charged for. Lambda, a fresh microVM per environment, is charged for both kinds of page: read
the larger figure as the closer estimate of its Max Memory Used.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.config import Config

from deployers import wire
from deployers.aws_lambda.invoker import parse_report
from deployers.aws_lambda.package import build_package
from deployers.standins import FunctionConfig, LocalLambda

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "diginetica"


def recommender(path: str | None) -> object:
    import torch

    from niser.inference import Recommender
    from niser.train import TrainConfig, build_model
    from niser.vocab import Vocabulary

    if path:
        return Recommender.load(path)
    torch.manual_seed(0)
    config = TrainConfig.model_validate({"dim": 100, "device": "cpu"})
    n = 43097
    return Recommender(build_model(n, config), config, Vocabulary.identity(n),
                       np.ones(n + 1, dtype=np.int64))


def payloads(vocab_ids: np.ndarray, count: int) -> list[list[int]]:
    if (SHARED / "test.tsv").is_file():
        lines = (SHARED / "test.tsv").read_text().splitlines()[:count]
        return [[int(x) for x in line.split("\t")[0].split()] for line in lines]
    rng = np.random.default_rng(0)
    return [rng.choice(vocab_ids, size=int(rng.integers(1, 10))).tolist() for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recommender", help="a Recommender.save directory")
    parser.add_argument("--cold", type=int, default=5, help="cold starts to measure")
    parser.add_argument("--warm", type=int, default=500, help="warm invokes to measure")
    parser.add_argument("--memory", type=int, default=1769, help="function memory in MB")
    parser.add_argument("--oom-batch", type=int, default=0,
                        help="also measure the peak memory of one request of this many sessions"
                        " and show a function configured below it running out of memory")
    parser.add_argument("--oom-memory", type=int, default=128,
                        help="memory size (MB) of the function that should run out of memory")
    args = parser.parse_args()

    rec = recommender(args.recommender)
    work = Path(tempfile.mkdtemp(prefix="bench-lambda-"))
    from niser.lambda_bundle import write_bundle

    code = write_bundle(rec, work / "code")  # type: ignore[arg-type]
    packages = {}
    for arch in ("x86_64", "arm64"):
        pkg = build_package(code, work, "python3.11", arch)
        packages[arch] = pkg
        print(f"package python3.11/{arch}: {pkg.unzipped_bytes / 2**20:.1f} MiB unzipped "
              f"(limit 250 MiB), {pkg.zipped_bytes / 2**20:.1f} MiB zipped")

    sessions = payloads(rec.vocab.raw_ids, max(args.warm, 1))  # type: ignore[attr-defined]
    with LocalLambda() as svc:
        client = boto3.client("lambda", endpoint_url=svc.url, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local",
                              config=Config(retries={"total_max_attempts": 1}))

        def invoke(batch: list[list[int]]) -> tuple[float, dict[str, Any], str]:
            """(client ms, the answer's fields, the log tail) of one request."""
            body = wire.encode_request(batch, 20)
            start = time.perf_counter()
            out = client.invoke(FunctionName="niser", Payload=body, LogType="Tail")
            out["Payload"] = out["Payload"].read()
            return (time.perf_counter() - start) * 1000, out, base64.b64decode(
                out["LogResult"]).decode()

        def call(session: list[int]) -> tuple[float, dict[str, float]]:
            elapsed, out, log = invoke([session])
            assert "FunctionError" not in out, out["Payload"]
            return elapsed, parse_report(log)

        config = FunctionConfig("niser", packages["x86_64"].root, memory_mb=args.memory,
                                timeout_s=30)
        inits, firsts = [], []
        for _ in range(args.cold):
            svc.add_function(config)  # replaces the function: no environment left
            elapsed, report = call(sessions[0])
            inits.append(report["init_ms"])
            firsts.append(elapsed)
        print(f"cold start x{args.cold}: Init Duration median {np.median(inits):.0f} ms "
              f"(max {max(inits):.0f}); first answer median {np.median(firsts):.0f} ms "
              f"(max {max(firsts):.0f})")
        for s in sessions[:20]:
            call(s)
        lat, dur = [], []
        for s in sessions[: args.warm]:
            elapsed, report = call(s)
            lat.append(elapsed)
            dur.append(report["duration_ms"])
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        print(f"warm boto3 invoke x{len(lat)} (1 session, k=20): p50 {p50:.2f} ms, "
              f"p90 {p90:.2f} ms, p99 {p99:.2f} ms; handler Duration p50 "
              f"{np.median(dur):.2f} ms")
        last = svc.reports[-1]
        served = sum(r.environment == last.environment for r in svc.reports)
        source = "cgroup peak" if svc.shaping != "none" else "VmHWM"
        print(f"peak memory of the warm environment after {served} invokes "
              f"(shaping {svc.shaping}, memory size {args.memory} MB): Max Memory Used "
              f"{last.max_memory_mb} MB ({source}); process peak RSS (VmHWM) "
              f"{last.peak_rss_mb} MB")
        if args.oom_batch:
            out_of_memory(svc, invoke, packages["x86_64"].root, sessions, args)


def out_of_memory(svc: LocalLambda, invoke: Callable[..., tuple[float, dict[str, Any], str]],
                  root: Path, sessions: list[list[int]], args: argparse.Namespace) -> None:
    """Peak memory of one request of ``--oom-batch`` sessions with room to spare, then the
    same request on a function of ``--oom-memory`` MB: the out-of-memory answer, its REPORT
    line, and whether the next request got a fresh environment."""
    batch = (sessions * (args.oom_batch // max(len(sessions), 1) + 1))[: args.oom_batch]
    svc.add_function(FunctionConfig("niser", root, memory_mb=max(args.memory, 1769),
                                    timeout_s=60))
    _, out, log = invoke(batch)
    peak = parse_report(log).get("max_memory_mb")
    print(f"one request of {len(batch)} sessions at {max(args.memory, 1769)} MB: "
          f"{'error ' + str(out['FunctionError']) if 'FunctionError' in out else 'ok'}, "
          f"Max Memory Used {peak} MB")
    svc.add_function(FunctionConfig("niser", root, memory_mb=args.oom_memory, timeout_s=60))
    _, out, _ = invoke(batch[:1])
    print(f"at {args.oom_memory} MB, 1 session: "
          f"{'error' if 'FunctionError' in out else 'ok'}")
    started = time.perf_counter()
    _, out, log = invoke(batch)
    print(f"at {args.oom_memory} MB, {len(batch)} sessions: FunctionError "
          f"{out.get('FunctionError')}, payload {out['Payload'][:160]!r} after "
          f"{time.perf_counter() - started:.2f} s")
    print("  " + next((ln for ln in log.splitlines() if ln.startswith("REPORT")), "(no REPORT)"))
    _, out, log = invoke(batch[:1])
    report = parse_report(log)
    start = (f"cold start, Init Duration {report['init_ms']:.0f} ms" if "init_ms" in report
             else "warm")
    print(f"at {args.oom_memory} MB, 1 session again: "
          f"{'error' if 'FunctionError' in out else 'ok'}, {start}, environments now "
          f"{svc.environments('niser')}")


if __name__ == "__main__":
    main()
