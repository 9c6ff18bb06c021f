"""NISER on a GPU, in-process and behind ``mlflow models serve``: the GPU-endpoint analogue of the
paper's ml.g4dn rows, with the same measurements on the same machine's CPU beside it.

Two commands (``scripts/gpu_serving.sh`` runs both, each where it belongs):

``prepare`` (with the project's venv, where ``../shared/data`` is) writes into ``--out``:
``model/``, the serving pyfunc of a Diginetica-size NISER (43,098 x 100 item table, untrained
weights: they time the same as trained ones), saved like ``niser.registry.log_recommender`` logs it
but to a plain directory; and ``payloads.json``, test sessions as raw item ids.

``measure`` (on the machine under test; needs only torch, mlflow and this repository) does, for
each device of ``--devices`` (default ``cuda,cpu``):

1. in-process: ``Recommender.load(<model>/artifacts/recommender, device=...)``, batch-1 latency
   (p50/p90/p99 over ``--requests`` payloads after a warm-up) and batch-100 sessions/s;
2. served: ``NISER_DEVICE=<device> mlflow models serve -m <model> --env-manager local -w 1`` on a
   free port, ``/ping`` within ``--ping-timeout``, one checked request, then a closed-loop sweep
   (``bench.sweep.sweep`` through ``deployers.http.HttpInvoker``) over ``--levels`` users; the
   server is ended by process group afterwards, whatever happened.

Results are rewritten into ``--out`` (JSON) after every step, so a run cut short keeps what it
measured; a step that fails is recorded with its error and the next one still runs. A device
that is not there (``cuda`` without a GPU) is recorded as skipped.

    python scripts/gpu_serving.py prepare --out .gpuserve
    python scripts/gpu_serving.py measure --model .gpuserve/model \\
        --payloads .gpuserve/payloads.json --devices cuda,cpu --out /tmp/gpu_serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ARTIFACT = "recommender"  # niser.pyfunc.ARTIFACT_KEY; the pyfunc keeps artifacts under artifacts/<key>
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diginetica"


def prepare(out: Path, data_dir: Path, n_payloads: int, seed: int) -> None:
    """Write ``out/model`` (pyfunc directory) and ``out/payloads.json``; see the module docstring."""
    import mlflow

    from bench.payloads import Payloads
    from niser import pyfunc
    from niser.data import load_preprocessed
    from niser.inference import Recommender, item_popularity
    from niser.registry import PACKAGE_DIR, PYFUNC_PATH, pip_requirements
    from niser.train import TrainConfig, build_model

    data = load_preprocessed(data_dir)
    config = TrainConfig()
    rec = Recommender(build_model(data.n_items, config), config, data.vocab,
                      item_popularity(data.train, data.n_items))
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rec.save(Path(tmp) / ARTIFACT)
        mlflow.pyfunc.save_model(
            str(model_dir), python_model=str(PYFUNC_PATH),
            artifacts={pyfunc.ARTIFACT_KEY: str(Path(tmp) / ARTIFACT)},
            code_paths=[str(PACKAGE_DIR)], signature=pyfunc.serving_signature(),
            input_example=pyfunc.input_example(), pip_requirements=pip_requirements(),
            metadata={"niser": {"dataset": data.summary(), "weights": "untrained (latency only)"}},
        )
    pool = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=seed,
                                 max_sessions=n_payloads)
    sessions = [batch[0] for batch in pool.batches]
    (out / "payloads.json").write_text(json.dumps({
        "source": f"{data_dir}/test.tsv prefixes as raw ids", "seed": seed,
        "n_items": data.n_items, "sessions": sessions}))
    print(f"wrote {model_dir} ({data.n_items + 1} x {config.dim} item table) and "
          f"{out / 'payloads.json'} ({len(sessions)} sessions)")


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": float(a.size), "mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def inprocess(model: Path, sessions: list[list[int]], device: str, requests: int,
              batch: int, min_seconds: float, cpu_threads: int = 0) -> dict[str, Any]:
    """Batch-1 latency over ``requests`` payloads and batch-``batch`` sessions/s on ``device``
    (with ``cpu_threads`` torch threads when > 0, else torch's default)."""
    import torch

    from niser.inference import Recommender

    default_threads = torch.get_num_threads()
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)

    t0 = time.perf_counter()
    rec = Recommender.load(model / "artifacts" / ARTIFACT, device=device)
    load_s = time.perf_counter() - t0
    for s in sessions[:20]:  # warm-up: CUDA context, kernels, allocator
        rec.recommend([s], 20)
    rec.recommend(sessions[:batch], 20)
    lat = []
    for s in (sessions[i % len(sessions)] for i in range(requests)):
        t_ns = time.perf_counter_ns()
        rec.recommend([s], 20)
        lat.append((time.perf_counter_ns() - t_ns) / 1e6)
    batches = [sessions[i:i + batch] for i in range(0, len(sessions) - batch + 1, batch)]
    batches = batches or [sessions]  # fewer payloads than one batch: one smaller batch
    done, t = 0, time.perf_counter()
    while True:
        for b in batches:
            rec.recommend(b, 20)
            done += len(b)
        if time.perf_counter() - t >= min_seconds:
            break
    elapsed = time.perf_counter() - t
    result = {"device": str(rec.device), "load_s": load_s, "torch_threads": torch.get_num_threads(),
              "batch1": _percentiles(lat), "batch": batch, "batch_sessions": done,
              "batch_seconds": elapsed, "batch_sessions_per_s": done / elapsed}
    del rec
    torch.set_num_threads(default_threads)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def _gpu_processes() -> str:
    """``nvidia-smi``'s compute processes (pid, memory), or why they could not be read."""
    if shutil.which("nvidia-smi") is None:
        return "(nvidia-smi not found)"
    res = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv"],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip() or res.stderr.strip()


def _keep_log(log: Path, logs: Path | None) -> None:
    """Copy the server log into ``logs`` without its per-request access lines (they run to MBs)."""
    if logs is None or not log.is_file():
        return
    logs.mkdir(parents=True, exist_ok=True)
    lines = log.read_text(errors="replace").splitlines()
    kept = [line for line in lines if '"POST /invocations HTTP/1.1" 200' not in line]
    (logs / log.name).write_text("\n".join(kept) + f"\n({len(lines) - len(kept)} lines of "
                                 "successful POST /invocations left out)\n")


def served(model: Path, sessions: list[list[int]], device: str, levels: list[int],
           seconds: float, warmup: float, ping_timeout: float, workdir: Path,
           logs: Path | None = None, cpu_threads: int = 0) -> dict[str, Any]:
    """A closed-loop sweep against ``mlflow models serve`` with ``NISER_DEVICE=device``; the
    server's log (access lines left out) is copied into ``logs`` when given."""
    from bench.load_settings import LoadSettings
    from bench.payloads import Payloads
    from bench.sweep import sweep
    from deployers import procs
    from deployers.http import HttpInvoker, free_port, tail, wait_for_ping

    if shutil.which("uvicorn") is None:
        raise RuntimeError("no 'uvicorn' on PATH: mlflow's scoring server execs it; put the "
                           "folder holding uvicorn's script (e.g. /tmp/site/bin) on PATH")
    port = free_port()
    env = procs.scoring_server_env(dict(os.environ, NISER_DEVICE=device, PYTHONUNBUFFERED="1"))
    if cpu_threads > 0:  # torch reads these at start-up
        env.update(OMP_NUM_THREADS=str(cpu_threads), MKL_NUM_THREADS=str(cpu_threads))
    argv = procs.scoring_server_argv(str(model.resolve()), port, workers=1)
    log = workdir / f"server-{device.replace(':', '')}.log"
    url = f"http://127.0.0.1:{port}"
    record, proc = procs.spawn(argv, env, log, cwd=workdir, role="gpu-serving")
    out: dict[str, Any] = {"device": device, "argv": argv, "log": str(log),
                           "cpu_threads": cpu_threads or "torch default"}
    invoker = HttpInvoker(url, timeout_s=10.0)
    try:
        out["ready_s"] = wait_for_ping(url, ping_timeout, proc, log)
        check = invoker([sessions[0]], 20)
        if len(check.items[0]) != 20:
            raise RuntimeError(f"the server answered {len(check.items[0])} items, not 20: "
                               f"{str(check.raw)[:300]}")
        out["check_items"] = check.items[0][:5]
        pids = sorted(p.pid for p in procs.members(record))
        out["server_pids"] = pids
        if device.startswith("cuda"):
            listed = _gpu_processes()
            out["gpu_processes"] = listed
            out["server_on_gpu"] = any(str(pid) in listed.split() or f"{pid}," in listed
                                       for pid in pids)
        settings = LoadSettings(warmup_s=warmup, duration_s=seconds, k=20)
        result = sweep(invoker, Payloads(sessions, batch_size=1, seed=0), levels, settings)
        out["levels"] = [{k: float(v) for k, v in vars(st).items()} for st in result.stats()]
        out["cpu_saturated"] = result.cpu_saturated
        out["stopped_reason"] = result.stopped_reason
    except BaseException:
        out["log_tail"] = tail(log, 40)
        raise
    finally:
        invoker.close()
        procs.end(record)
        out.setdefault("log_tail", tail(log, 8))
        _keep_log(log, logs)
    return out


def _print_inprocess(name: str, r: dict[str, Any]) -> None:
    b1 = r["batch1"]
    print(f"{name}: device {r['device']}, torch threads {r['torch_threads']}, load {r['load_s']:.2f} s;"
          f" batch 1 p50 {b1['p50_ms']:.3f} ms, p90 {b1['p90_ms']:.3f} ms, p99 {b1['p99_ms']:.3f} ms"
          f" (n={int(b1['n'])}); batch {r['batch']}: {r['batch_sessions_per_s']:.0f} sessions/s")


def _print_served(name: str, r: dict[str, Any]) -> None:
    on_gpu = f"; server pid on the GPU: {r['server_on_gpu']}" if "server_on_gpu" in r else ""
    print(f"\n{name}: ready after {r['ready_s']:.1f} s{on_gpu}")
    if r.get("gpu_processes"):
        print(r["gpu_processes"])
    print(f"{'users':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for st in r["levels"]:
        print(f"{int(st['level']):>5} {st['p50_ms']:>8.2f} {st['p95_ms']:>8.2f} "
              f"{st['p99_ms']:>8.2f} {st['throughput_rps']:>8.1f} "
              f"{int(st['errors'] + st['timeouts']):>6}")
    if r.get("stopped_reason"):
        print(f"stopped early: {r['stopped_reason']}")


def _environment() -> dict[str, Any]:
    import mlflow
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "mlflow": mlflow.__version__, "cpu_count": os.cpu_count(),
                           "machine": platform.machine(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def measure(args: argparse.Namespace) -> int:
    """Run every step of the module docstring; return 0 when all of them succeeded."""
    import torch

    doc = json.loads(args.payloads.read_text())
    sessions = [[int(i) for i in s] for s in doc["sessions"] if s]
    results: dict[str, Any] = {"environment": _environment(), "levels": args.levels,
                               "seconds": args.seconds, "warmup": args.warmup,
                               "cpu_threads": args.cpu_threads or "torch default",
                               "payloads": len(sessions), "inprocess": {}, "served": {},
                               "errors": {}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    print(f"environment: {results['environment']}")
    save()
    failed = 0
    workdir = Path(tempfile.mkdtemp(prefix="gpu-serving-"))
    steps = [(kind, d) for kind in args.steps for d in args.devices]
    for kind, device in steps:
        name = f"{kind}-{device}"
        if device.startswith("cuda") and not torch.cuda.is_available():
            results["errors"][name] = "skipped: torch.cuda.is_available() is False"
            print(f"{name}: skipped, no CUDA device")
            save()
            continue
        try:
            if kind == "inprocess":
                r = inprocess(args.model, sessions, device, args.requests, args.batch,
                              args.min_seconds, args.cpu_threads)
                _print_inprocess(name, r)
            else:
                r = served(args.model, sessions, device, args.levels, args.seconds, args.warmup,
                           args.ping_timeout, workdir, args.logs, args.cpu_threads)
                _print_served(name, r)
            results[kind][device] = r
        except Exception as exc:  # record it and go on with the next step
            failed += 1
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED {type(exc).__name__}: {exc}")
        except BaseException as exc:  # SIGTERM (the caller's timeout) or Ctrl-C: say so, stop
            results["errors"][name] = f"interrupted ({type(exc).__name__}) before it finished"
            save()
            raise
        save()
    if args.logs is not None:  # the logs were copied there; otherwise keep them for reading
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="write the pyfunc model and payloads (needs ../shared)")
    pp.add_argument("--out", type=Path, default=Path(".gpuserve"))
    pp.add_argument("--data", type=Path, default=DEFAULT_DATA)
    pp.add_argument("--payloads", type=int, default=2000, help="test sessions to keep")
    pp.add_argument("--seed", type=int, default=0)
    pm = sub.add_parser("measure", help="in-process and served figures per device")
    pm.add_argument("--model", type=Path, default=Path(".gpuserve/model"))
    pm.add_argument("--payloads", type=Path, default=Path(".gpuserve/payloads.json"))
    pm.add_argument("--devices", type=lambda s: s.split(","), default=["cuda", "cpu"],
                    help="comma-separated torch devices, e.g. cuda,cpu")
    pm.add_argument("--steps", type=lambda s: s.split(","), default=["inprocess", "served"],
                    help="comma-separated subset of inprocess,served")
    pm.add_argument("--levels", type=_csv_ints, default=[1, 2, 4, 8, 16])
    pm.add_argument("--seconds", type=float, default=5.0, help="steady-state window per level")
    pm.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per level")
    pm.add_argument("--requests", type=int, default=1000, help="batch-1 in-process requests")
    pm.add_argument("--batch", type=int, default=100, help="sessions per throughput batch")
    pm.add_argument("--min-seconds", type=float, default=2.0,
                    help="batch throughput runs whole passes over the payloads for this long")
    pm.add_argument("--ping-timeout", type=float, default=120.0)
    pm.add_argument("--cpu-threads", type=int, default=0,
                    help="torch CPU threads in-process and in the servers (0: torch's default)")
    pm.add_argument("--out", type=Path, default=Path("gpu_serving.json"))
    pm.add_argument("--logs", type=Path, help="folder to copy the servers' logs into")
    args = p.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.data, args.payloads, args.seed)
        return 0
    unknown = set(args.steps) - {"inprocess", "served"}
    if unknown:
        p.error(f"--steps takes inprocess and/or served, got {sorted(unknown)}")
    # A timeout's SIGTERM unwinds like Ctrl-C, so every started server is ended by ``finally``.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
