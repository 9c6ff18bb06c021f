"""Recall@K / MRR@K of the POP, S-POP and Item-KNN baselines on a preprocessed split.

Usage: python scripts/bench_baselines.py ../shared/data/diginetica [--batch-size 500]

Every baseline is fitted on the training sessions (rebuilt from the prefix-augmented samples)
and scored over the whole test set by ``niser.metrics.evaluate``, the code that scores NISER.
"""

from __future__ import annotations

import argparse
import time

from niser.baselines import ItemKNN, Pop, SPop
from niser.data import load_preprocessed
from niser.metrics import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="folder with train_sessions.txt and test.tsv")
    parser.add_argument("--batch-size", type=int, default=500, help="test samples per batch")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    data = load_preprocessed(args.data_dir)
    print(f"loaded {data.name}: {data.n_items} items, {len(data.train)} train samples, "
          f"{len(data.test)} test samples in {time.perf_counter() - t0:.1f} s")
    header = (f"{'baseline':<10}{'Recall@20':>10}{'MRR@20':>8}{'Recall@10':>10}{'MRR@10':>8}"
              f"{'fit s':>8}{'eval s':>8}")
    print(header)
    for baseline in (Pop(), SPop(), ItemKNN()):
        t1 = time.perf_counter()
        baseline.fit(data.train, data.n_items)
        t2 = time.perf_counter()
        m = evaluate(baseline.topk, data.test, (10, 20), args.batch_size)
        t3 = time.perf_counter()
        print(f"{baseline.name:<10}{m['recall_20']:>10.2f}{m['mrr_20']:>8.2f}"
              f"{m['recall_10']:>10.2f}{m['mrr_10']:>8.2f}{t2 - t1:>8.1f}{t3 - t2:>8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
