"""Training and inference figures for NISER on a preprocessed dataset (default: Diginetica).

Prints, per epoch, Recall/MRR @10 and @20, the training wall time and samples/s, then the
in-process inference latency at batch 1 (p50/p90 over test sessions) and sessions/s at batch 100.
Writes the same as JSON with ``--out``.

    python scripts/bench_niser.py --data ../shared/data/diginetica --epochs 5
    python scripts/bench_niser.py --epochs 1 --max-train-samples 50000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from niser.data import SessionData, load_preprocessed
from niser.inference import Recommender
from niser.train import EpochResult, TrainConfig, train


def inference_figures(rec: Recommender, data: SessionData, n: int = 1000) -> dict[str, float]:
    """Batch-1 latency percentiles (ms) and batch-100 throughput (sessions/s), raw ids in/out."""
    raw = [data.vocab.decode(np.array(s)).tolist() for s in data.test.sessions()[: max(n, 2000)]]
    for s in raw[:100]:
        rec.recommend([s], 20)  # warm-up
    lat = []
    for s in raw[:n]:
        t = time.perf_counter()
        rec.recommend([s], 20)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    done = 0
    for i in range(0, len(raw) - 99, 100):
        rec.recommend(raw[i : i + 100], 20)
        done += 100
    rate = done / (time.perf_counter() - t)
    ms = np.array(lat) * 1e3
    return {"batch1_p50_ms": float(np.percentile(ms, 50)), "batch1_p90_ms": float(np.percentile(ms, 90)),
            "batch100_sessions_per_s": rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/diginetica"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--long-sessions", choices=["truncate", "clamp"], default="truncate")
    p.add_argument("--max-train-samples", type=int, default=0, help="0 = all")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--save-model", type=Path, help="directory to save the trained Recommender")
    args = p.parse_args()
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_preprocessed(args.data)
    if args.max_train_samples:
        keep = np.random.default_rng(args.seed).permutation(len(data.train))[: args.max_train_samples]
        data = SessionData(data.name, data.train.subset(np.sort(keep)), data.test, data.vocab)
    print(f"loaded {data.summary()} in {time.perf_counter() - t0:.1f} s")
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
               "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    print(machine)
    config = TrainConfig(epochs=args.epochs, device=args.device, long_sessions=args.long_sessions,
                         seed=args.seed)

    def show(r: EpochResult) -> None:
        m = r.metrics
        print(f"epoch {r.epoch}: loss {r.loss:.4f}  R@20 {m['recall_20']:.2f}  M@20 {m['mrr_20']:.2f}  "
              f"R@10 {m['recall_10']:.2f}  M@10 {m['mrr_10']:.2f}  train {r.train_seconds:.1f} s  "
              f"({r.samples_per_second:.0f} samples/s)  eval {r.eval_seconds:.1f} s", flush=True)

    result = train(data, config, on_epoch=show, progress=False)
    rec = Recommender.from_training(result.model, config, data)
    if args.save_model:
        rec.save(args.save_model)
    rec.model.to(args.device)
    inf = inference_figures(rec, data)
    print(f"inference ({args.device}): batch-1 p50 {inf['batch1_p50_ms']:.3f} ms, "
          f"p90 {inf['batch1_p90_ms']:.3f} ms; batch 100: {inf['batch100_sessions_per_s']:.0f} sessions/s")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "config": config.model_dump(),
                                        "data": data.summary(),
                                        "epochs": [vars(h) for h in result.history],
                                        "inference": inf}, indent=2))


if __name__ == "__main__":
    main()
