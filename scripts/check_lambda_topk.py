"""Top-20 of the Lambda package (ONNX + numpy handler) against the torch Recommender.

    python scripts/check_lambda_topk.py --recommender /tmp/digi-model    # saved by bench_niser.py

Prints how many of the first N Diginetica test prefixes get identical top-20 lists, through the
export alone (``Model.topk`` vs ``Recommender.topk_indices``) and through the whole handler
(raw ids in and out).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from niser.data import load_preprocessed
from niser.inference import Recommender
from niser.lambda_handler import Model
from niser.onnx_export import write_model_files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recommender", type=Path, required=True, help="a saved Recommender directory")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/diginetica"))
    p.add_argument("-n", type=int, default=1000, help="test prefixes to compare")
    args = p.parse_args()
    if args.n < 1:
        p.error(f"-n must be >= 1, got {args.n}")
    rec = Recommender.load(args.recommender)
    test = load_preprocessed(args.data).test
    sub = test.subset(np.arange(min(args.n, len(test))))
    with tempfile.TemporaryDirectory() as tmp:
        write_model_files(rec, Path(tmp))
        model = Model.load(Path(tmp))
        want_i, want_s = rec.topk_indices(sub.items, sub.offsets, 20)
        got_i, got_s = model.topk(sub.items, sub.offsets, 20)
        raw = [rec.vocab.decode(np.array(s)).tolist() for s in sub.sessions()]
        handler = model.recommend(raw, 20)
    want = rec.recommend(raw, 20)
    same = int((want_i == got_i).all(axis=1).sum())
    same_raw = sum(g["items"] == w.items for g, w in zip(handler, want, strict=True))
    print(f"export: {same}/{len(sub)} identical top-20 lists; max |score diff| "
          f"{float(np.abs(want_s - got_s).max()):.2e}")
    print(f"handler vs Recommender.recommend (raw ids): {same_raw}/{len(sub)} identical")


if __name__ == "__main__":
    main()
