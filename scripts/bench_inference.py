"""In-process inference of a trained NISER, by scoring path and batch size, in one run.

    python scripts/bench_inference.py --model DIR [--sizes 1,8,32,100,500] [--rounds 3]
    python scripts/bench_inference.py --train-batches 1500   # no saved model: train a slice
    python scripts/bench_inference.py --model DIR --profile 100   # and where a call's time goes

``--profile N``: the stages of an N-session call on the shipped path, each timed alone (median
ms): the session graphs and embedding as shipped (``Recommender.queries``: length groups, the
GNN), the bf16 item product alone, the top-k (product and candidate selection), and the whole
``recommend``; the rest of the whole is vocabulary lookups and Python.

``--model`` is a folder written by ``Recommender.save`` (``bench_niser.py --save-model DIR``);
without it a model is trained for ``--train-batches`` batches of Diginetica (the score
distribution, and so the bf16 candidate count, depends on training; timing does not otherwise).
For every batch size, ``Recommender.recommend`` (raw ids in, raw ids out, k = 20) on test
sessions through three paths, alternately for ``--rounds`` rounds so that each has a same-run
baseline on this shared machine: ``fp32`` (every product in float32), ``bf16`` (bf16 candidates
rescored in float32 at every batch size) and ``auto`` (what ships: ``niser.scoring`` picks by
batch size on a CPU with bf16 units). Prints ms per call (median) and sessions/s per path and
size, the bf16 candidates per row and the rows scored whole in float32, and whether
the top-20 of ``bf16`` equals ``fp32`` on ``--agreement`` test sessions (items and order).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench import provenance
from niser import scoring
from niser.data import load_preprocessed
from niser.inference import Recommender
from niser.train import TrainConfig, train

DIGINETICA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diginetica"
PATHS = ("fp32", "bf16", "auto")
SHIPPED_MIN_ROWS = scoring.BF16_MIN_ROWS


def use(rec: Recommender, path: str) -> None:
    """Point ``rec`` at one scoring path."""
    rec.config = rec.config.model_copy(update={"precision": "fp32" if path == "fp32" else "bf16"})
    scoring.BF16_MIN_ROWS = 1 if path == "bf16" else SHIPPED_MIN_ROWS


def per_call_ms(rec: Recommender, sessions: list[list[int]], size: int, calls: int) -> float:
    """Median ms of ``recommend`` over ``calls`` consecutive batches of ``size`` sessions."""
    times = []
    for i in range(calls):
        start = (i * size) % max(len(sessions) - size, 1)
        batch = sessions[start:start + size]
        t = time.perf_counter()
        rec.recommend(batch, 20)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def stages(rec: Recommender, sessions: list[list[int]], size: int, calls: int
           ) -> dict[str, float]:
    """Median ms per stage of ``size``-session calls on the shipped path (see ``--profile``)."""
    use(rec, "auto")
    batch = rec.vocab.encode_batch(sessions[:size])
    scorer = rec.model.scorer(bf16=rec.precision.bf16)
    with torch.no_grad():
        query = rec.queries(batch.flat, batch.offsets)
        steps: dict[str, Callable[[], object]] = {
            "graphs and embedding": lambda: rec.queries(batch.flat, batch.offsets),
            "bf16 product": lambda: torch.mm(query.to(torch.bfloat16),
                                             scorer.table_bf16.t())
            if scorer.table_bf16 is not None else None,
            "top-k": lambda: scorer.topk(query, 20),
            "whole": lambda: rec.recommend(sessions[:size], 20),
        }
        out = {}
        for name, step in steps.items():
            step()
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            out[name] = 1e3 * statistics.median(times)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DIGINETICA)
    p.add_argument("--model", type=Path, help="a Recommender.save folder")
    p.add_argument("--train-batches", type=int, default=1500)
    p.add_argument("--sizes", default="1,8,32,100,500")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--agreement", type=int, default=1000)
    p.add_argument("--profile", type=int, metavar="SESSIONS",
                   help="also time the stages of a call of this size on the shipped path")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        p.error(f"--sizes must be integers >= 1 and --rounds >= 1, got {args.sizes!r}, "
                f"{args.rounds}")
    data = load_preprocessed(args.data)
    if args.model:
        rec = Recommender.load(args.model)
    else:
        result = train(data, TrainConfig(epochs=1, max_batches=args.train_batches, seed=0,
                                         device="cpu"), progress=False)
        rec = Recommender.from_training(result.model, result.config, data)
    raw = [data.vocab.decode(np.array(s)).tolist() for s in data.test.sessions()[:5000]]
    calls = {size: max(20, min(600, 3000 // size)) for size in sizes}
    ms: dict[str, dict[int, list[float]]] = {path: {s: [] for s in sizes} for path in PATHS}
    for path in PATHS:  # warm-up
        use(rec, path)
        for size in sizes:
            per_call_ms(rec, raw, size, 5)
    for _ in range(args.rounds):
        for path in PATHS:
            use(rec, path)
            for size in sizes:
                ms[path][size].append(per_call_ms(rec, raw, size, calls[size]))
    use(rec, "fp32")
    want = [r.items for r in rec.recommend(raw[:args.agreement], 20)]
    use(rec, "bf16")
    scorer = rec.model.scorer(bf16=True)
    scorer.bf16_rows = scorer.candidates = scorer.fallback_rows = 0
    got = [r.items for r in rec.recommend(raw[:args.agreement], 20)]
    same = sum(a == b for a, b in zip(want, got, strict=True))
    use(rec, "auto")
    print(f"every figure is {provenance.describe('measured-local')} (here: the "
          "model in this process)")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; shipped BF16_MIN_ROWS={SHIPPED_MIN_ROWS}; "
          f"median of {args.rounds} rounds (each the median ms per call)")
    print(f"{'sessions':>8} " + " ".join(f"{p + ' ms':>10} {p + ' /s':>10}" for p in PATHS))
    table = {}
    for size in sizes:
        row = {path: statistics.median(ms[path][size]) for path in PATHS}
        table[size] = {path: {"ms": v, "sessions_per_s": 1e3 * size / v} for path, v in row.items()}
        print(f"{size:>8} " + " ".join(f"{row[p]:>10.3f} {1e3 * size / row[p]:>10.0f}"
                                       for p in PATHS))
    print(f"top-20 bf16 = fp32 on {same} of {len(want)} sessions; {scorer.bf16_rows} bf16 rows "
          f"had {scorer.candidates / max(scorer.bf16_rows, 1):.1f} candidates each on average, "
          f"and {scorer.fallback_rows} were scored whole in float32")
    if args.profile:
        parts = stages(rec, raw, args.profile, 50)
        print(f"shipped path, {args.profile} sessions per call, median ms of 50 calls: "
              + ", ".join(f"{name} {v:.3f}" for name, v in parts.items()))
    if args.out:
        args.out.write_text(json.dumps({"sizes": table, "rounds": ms, "agreement": {
            "sessions": len(want), "identical": same, "candidates": scorer.candidates,
            "fallback_rows": scorer.fallback_rows,
            "bf16_rows": scorer.bf16_rows}, "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
