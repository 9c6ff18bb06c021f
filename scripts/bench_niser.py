"""NISER on a preprocessed dataset (default: Diginetica): accuracy across seeds, epoch times, the
precision path, in-process inference; or fp32 against the fast path on a short slice.

Default mode, per seed: train with the epoch chosen on validation (the most recent 10 % of the
training sessions; early stopping with ``--patience``), the test set evaluated once for the
chosen epoch. Prints each epoch (validation metrics, train time, samples/s), each seed's chosen
epoch and test metrics, then the mean and sample standard deviation over seeds of test
R@20 / MRR@20 / R@10 / MRR@10 and of the epoch time, and the in-process inference figures of the
first seed's model (batch-1 latency, batch-100 sessions/s). ``--refit``: after the choice, the
chosen number of epochs again on every training sample (validation sessions included), and the
test set evaluated once for that model (``TrainConfig.refit``).

``--compare-precision``: fp32 and the fast path (``--precision``, default auto) alternately, for
``--rounds`` rounds of ``--max-batches`` training batches each from the same initial weights;
training samples/s and the epoch time extrapolated to every training sample (train + valid).
Then, on the weights of the last fp32 slice, alternately for three top-k's (``before``:
torch.topk over the forward scores, the code before this change; ``fp32``: the chunked top-k;
``bf16``: what Recommender runs on the bf16 path, bf16 candidates rescored in float32 from
``niser.scoring.BF16_MIN_ROWS`` rows): evaluation samples/s, batch-1
p50 and batch-100 sessions/s, and the top-20 agreement of ``fp32`` and ``bf16`` with ``before``
on ``--agreement`` test prefixes (rows identical, rows breaking the tie rule of
``niser.scoring``).

    python scripts/bench_niser.py --seeds 3 --epochs 5 --out benchmarks/results/cpu_seeds3.json
    python scripts/bench_niser.py --seeds 3 --epochs 5 --refit --out benchmarks/results/cpu_refit3.json
    python scripts/bench_niser.py --seeds 2 --epochs 2 --max-batches 50 --max-eval-samples 2000
    python scripts/bench_niser.py --compare-precision --max-batches 200 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import provenance
from niser.data import SessionData, carve_validation, load_preprocessed
from niser.graph import build_batch
from niser.inference import Recommender
from niser.metrics import evaluate
from niser.model import NISER
from niser.precision import choose_precision
from niser.scoring import fp32_tie, tie_rule_violations
from niser.train import EpochResult, TrainConfig, TrainResult, train

METRICS = ("recall_20", "mrr_20", "recall_10", "mrr_10")


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
    return {"batch1_p50_ms": float(np.percentile(ms, 50)),
            "batch1_p90_ms": float(np.percentile(ms, 90)), "batch100_sessions_per_s": rate}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"), "n": len(values)}


def _show(r: EpochResult) -> None:
    m = r.validation
    print(f"  epoch {r.epoch}: loss {r.loss:.4f}  val R@20 {m['recall_20']:.2f}  "
          f"M@20 {m['mrr_20']:.2f}  R@10 {m['recall_10']:.2f}  M@10 {m['mrr_10']:.2f}  "
          f"train {r.train_seconds:.1f} s ({r.samples_per_second:.0f} samples/s)  "
          f"val {r.eval_seconds:.1f} s", flush=True)


def seeds_mode(args: argparse.Namespace, data: SessionData, machine: dict[str, Any]) -> None:
    runs: list[TrainResult] = []
    for seed in range(args.seed, args.seed + args.seeds):
        config = _config(args, seed)
        print(f"seed {seed}:", flush=True)
        result = train(data, config, on_epoch=_show, progress=False)
        for r in result.refit_history:
            print(f"  refit epoch {r.epoch}: loss {r.loss:.4f}  train {r.train_seconds:.1f} s "
                  f"({r.samples_per_second:.0f} samples/s)", flush=True)
        t = result.test
        print(f"  seed {seed}: chosen epoch {result.best_epoch} of {len(result.history)}"
              f"{' (stopped early)' if result.stopped_early else ''}; test R@20 "
              f"{t['recall_20']:.2f}  M@20 {t['mrr_20']:.2f}  R@10 {t['recall_10']:.2f}  "
              f"M@10 {t['mrr_10']:.2f}  ({result.test_seconds:.1f} s)", flush=True)
        runs.append(result)
    precision = runs[0].precision
    summary = {key: _mean_std([r.test[key] for r in runs]) for key in METRICS}
    summary["epoch_seconds"] = _mean_std([h.train_seconds for r in runs for h in r.history])
    if args.refit:  # epochs over every training sample
        summary["refit_epoch_seconds"] = _mean_std([h.train_seconds for r in runs
                                                    for h in r.refit_history])
    print(f"precision path: {precision.path} ({precision.reason})")
    for key, s in summary.items():
        print(f"{key}: mean {s['mean']:.2f}  std {s['std']:.2f}  over {s['n']}"
              f"{' seeds' if key in METRICS else ' epochs'}")
    rec = Recommender.from_training(runs[0].model, runs[0].config, data)
    if args.save_model:
        rec.save(args.save_model)
    rec.model.to(args.device)
    inf = inference_figures(rec, data)
    print(f"inference ({args.device}, {rec.precision.path} path): batch-1 p50 "
          f"{inf['batch1_p50_ms']:.3f} ms, p90 {inf['batch1_p90_ms']:.3f} ms; batch 100: "
          f"{inf['batch100_sessions_per_s']:.0f} sessions/s")
    if args.out:
        args.out.write_text(json.dumps({
            "machine": machine, "config": runs[0].config.model_dump(), "data": data.summary(),
            "precision": vars(precision), "summary": summary, "inference": inf,
            "seeds": [{"seed": r.config.seed, "best_epoch": r.best_epoch,
                       "stopped_early": r.stopped_early, "test": r.test,
                       "test_seconds": r.test_seconds, "split": r.split,
                       "epochs": [vars(h) for h in r.history],
                       "refit_epochs": [vars(h) for h in r.refit_history]} for r in runs]},
                      indent=2))


def agreement(model: NISER, data: SessionData, config: TrainConfig, n: int, bf16: bool
              ) -> dict[str, int]:
    """Top-20 of ``model.topk`` against ``torch.topk`` of the float32 scores on the first ``n``
    test prefixes: rows identical, and rows that break the tie rule of ``niser.scoring``."""
    model.eval()
    device = next(model.parameters()).device
    batch = data.test.subset(np.arange(min(n, len(data.test))))
    identical = broken = 0
    for start in range(0, len(batch), 100):
        part = batch.subset(np.arange(start, min(start + 100, len(batch))))
        g = build_batch(part.items, part.offsets, config.max_positions, config.long_sessions)
        with torch.no_grad():
            query = model.query(*g.tensors(device))
            fp32 = model(*g.tensors(device))
            values, index = model.scorer(bf16).topk(query, 20)
        identical += int((index == torch.topk(fp32, 20, dim=1).indices).all(dim=1).sum())
        tie = fp32_tie(query.norm(dim=1), model.dim)
        broken += int(tie_rule_violations(fp32, values, index, tie).sum())
    return {"prefixes": len(batch), "identical_rows": identical, "tie_rule_broken": broken}


BEFORE_SNIPPET = """
import json, sys, time
import numpy as np, torch
from niser.data import load_preprocessed
from niser.train import TrainConfig, _train_epoch, build_model, seed_everything
folder, batches, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_flush_denormal(True)
data = load_preprocessed(folder)
config = TrainConfig(seed=seed, device="cpu")
seed_everything(seed)
model = build_model(data.n_items, config)
opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                       fused=True)
rng = np.random.default_rng(seed)
order = rng.permutation(len(data.train))
warm, timed = data.train.subset(order[:1000]), data.train.subset(order[1000:1000 + 100 * batches])
_train_epoch(model, opt, warm, config, rng, torch.device("cpu"), False, 0)
t = time.perf_counter()
_train_epoch(model, opt, timed, config, rng, torch.device("cpu"), False, 0)
print(json.dumps({"samples_per_s": len(timed) / (time.perf_counter() - t)}))
"""


def before_rate(repo: Path, folder: str, batches: int, seed: int) -> float:
    """Training samples/s of the code in ``repo`` (a checkout from before this change, whose
    ``niser.train._train_epoch`` trains on every sample it is given): 10 batches untimed, then
    ``batches`` batches of a seeded shuffle, in a subprocess started in ``repo`` (so that its
    ``niser`` is imported, not this one)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", BEFORE_SNIPPET, folder, str(batches), str(seed)],
                         env={**os.environ, "PYTHONPATH": str(repo)}, cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["samples_per_s"])


class Variant(Recommender):
    """``rec`` answering through one top-k: ``before`` (``torch.topk`` over ``NISER.forward``,
    the code before the chunked top-k), ``fp32`` (``NISER.topk``, what ``Recommender`` runs) or
    ``bf16`` (``NISER.topk`` with bf16 candidates)."""

    def __init__(self, rec: Recommender, how: str) -> None:
        super().__init__(rec.model, rec.config, rec.vocab, rec.popularity)
        self.how = how

    def topk_indices(self, items: np.ndarray, offsets: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        g = build_batch(items, offsets, self.config.max_positions, self.config.long_sessions)
        tensors = g.tensors(self.device)
        with torch.no_grad():
            if self.how == "before":
                top = torch.topk(self.model(*tensors), k, dim=1)
                values, index = top.values, top.indices
            else:
                values, index = self.model.topk(k, *tensors, bf16=self.how == "bf16")
        return index.cpu().numpy(), values.cpu().numpy()

    def scorer(self, batch: Any, k: int) -> np.ndarray:
        """``topk_fn``'s contract, for ``evaluate``."""
        return self.topk_indices(batch.items, batch.offsets, k)[0]


def compare_mode(args: argparse.Namespace, data: SessionData, machine: dict[str, Any]) -> None:
    fast = choose_precision(args.precision, torch.device(args.device))
    print(f"fast path: {fast.path} ({fast.reason})", flush=True)
    if not fast.bf16:
        raise SystemExit("the fast path here is fp32: nothing to compare (try --precision bf16)")
    paths: list[str] = ["fp32", fast.path]
    small = SessionData(data.name, data.train, data.test.subset(np.arange(500)), data.vocab,
                        data.valid.subset(np.arange(500)) if data.valid else None)
    train_rate: dict[str, list[float]] = {p: [] for p in paths}
    last: dict[str, TrainResult] = {}
    for path in paths:  # warm-up, untimed: first-touch allocations and kernel selection
        train(small, _config(args, args.seed).model_copy(
            update={"epochs": 1, "precision": path, "max_batches": 10}), progress=False)
    if args.before:
        paths = ["before", *paths]
        train_rate["before"] = []
    for rnd in range(args.rounds):
        for path in paths:
            if path == "before":
                rate = before_rate(args.before, args.data, args.max_batches, args.seed)
                train_rate[path].append(rate)
                print(f"round {rnd + 1} train before ({args.before}): {args.max_batches} "
                      f"batches, {rate:.0f} samples/s", flush=True)
                continue
            config = _config(args, args.seed).model_copy(update={"epochs": 1, "precision": path})
            last[path] = train(small, config, progress=False)
            rate, loss = last[path].history[0].samples_per_second, last[path].history[0].loss
            train_rate[path].append(rate)
            print(f"round {rnd + 1} train {path}: {args.max_batches} batches, {rate:.0f} "
                  f"samples/s, mean loss {loss:.5f}", flush=True)
    every = len(data.train) + len(data.valid or [])  # all training samples: 719,470 on Diginetica
    out: dict[str, Any] = {"machine": machine, "fast_path": vars(fast), "rounds": args.rounds,
                           "max_batches": args.max_batches, "training": {}, "inference": {}}
    for path in paths:
        rate = statistics.median(train_rate[path])
        out["training"][path] = {"samples_per_s": rate, "rounds": train_rate[path],
                                 "epoch_s_extrapolated": every / rate}
        if path in last:  # same initial weights, batches and dropout: the loss compares paths
            out["training"][path]["mean_loss"] = last[path].history[0].loss
        print(f"train {path}: {rate:.0f} samples/s (median of {args.rounds}); an epoch of "
              f"{every:,} samples, extrapolated: {every / rate:.0f} s", flush=True)
    model, config = last["fp32"].model, last["fp32"].config
    base = Recommender.from_training(model, config, data)
    variants = {how: Variant(base, how) for how in ("before", "fp32", "bf16")}
    test = data.test.subset(np.arange(min(len(data.test), args.max_eval_samples or 10_000)))
    figures: dict[str, dict[str, list[float]]] = {how: {} for how in variants}
    for _ in range(args.rounds):
        for how, rec in variants.items():
            t = time.perf_counter()
            evaluate(rec.scorer, test, config.ks, config.eval_batch_size)
            figures[how].setdefault("eval_samples_per_s", []).append(
                len(test) / (time.perf_counter() - t))
            for key, value in inference_figures(rec, data).items():
                figures[how].setdefault(key, []).append(value)
    for how, fig in figures.items():
        row = {k: statistics.median(v) for k, v in fig.items()}
        out["inference"][how] = row
        print(f"top-k {how}: eval {row['eval_samples_per_s']:.0f} samples/s; batch-1 p50 "
              f"{row['batch1_p50_ms']:.3f} ms; batch 100 {row['batch100_sessions_per_s']:.0f} "
              "sessions/s", flush=True)
    for how in ("fp32", "bf16"):
        out[f"agreement_{how}"] = agreement(model, data, config, args.agreement, how == "bf16")
        print(f"top-20 {how} against before, weights after {args.max_batches} fp32 batches: "
              f"{out[f'agreement_{how}']}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


def _config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, device=args.device, long_sessions=args.long_sessions,
                       seed=seed, patience=args.patience, precision=args.precision,
                       max_batches=args.max_batches, refit=args.refit, lr_step=args.lr_step,
                       lr_gamma=args.lr_gamma)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] /
                                         "shared/data/diginetica"))
    p.add_argument("--epochs", type=int, default=5, help="most epochs per seed")
    p.add_argument("--seeds", type=int, default=1, help="seeds seed, seed + 1, ...")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--patience", type=int, default=TrainConfig().patience)
    p.add_argument("--lr-step", type=int, default=TrainConfig().lr_step,
                   help="epochs between learning-rate decays")
    p.add_argument("--lr-gamma", type=float, default=TrainConfig().lr_gamma,
                   help="learning-rate decay factor")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--refit", action="store_true", help="after choosing the epoch count on "
                   "validation, train it again on every training sample and test that model")
    p.add_argument("--max-batches", type=int, default=None,
                   help="training batches per epoch (a slice); default: every sample")
    p.add_argument("--max-eval-samples", type=int, default=0,
                   help="keep the first N validation and test samples (a smoke run; 0 = all)")
    p.add_argument("--compare-precision", action="store_true",
                   help="fp32 against the fast path on a slice (see above)")
    p.add_argument("--rounds", type=int, default=2, help="--compare-precision rounds")
    p.add_argument("--agreement", type=int, default=1000, help="test prefixes compared")
    p.add_argument("--before", type=Path, help="--compare-precision: also time the training "
                   "of this checkout (the code before this change), in the same rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--long-sessions", choices=["truncate", "clamp"], default="truncate")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--out", type=Path)
    p.add_argument("--save-model", type=Path, help="directory to save the trained Recommender")
    args = p.parse_args()
    if args.epochs < 1 or args.seeds < 1:
        p.error(f"--epochs and --seeds must be >= 1, got {args.epochs} and {args.seeds}")
    if args.compare_precision and not args.max_batches:
        p.error("--compare-precision times a slice: give --max-batches (e.g. 200)")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = carve_validation(load_preprocessed(args.data))
    if args.max_eval_samples and not args.compare_precision:
        assert data.valid is not None
        keep = args.max_eval_samples
        data = SessionData(data.name, data.train, data.test.subset(np.arange(min(keep, len(
            data.test)))), data.vocab, data.valid.subset(np.arange(min(keep, len(data.valid)))))
    print(f"loaded {data.summary()} in {time.perf_counter() - t0:.1f} s")
    machine = {"platform": platform.platform(),
               "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": args.device,
               "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    print(machine)
    print(f"every figure below is {provenance.describe('measured-local')} "
          "(here: training and the model in this process)")
    (compare_mode if args.compare_precision else seeds_mode)(args, data, machine)


if __name__ == "__main__":
    main()
