"""Log and register a Diginetica-size NISER in the current MLflow tracking server.

    python scripts/register_model.py [--data ../shared/data/diginetica] [--recommender DIR]
                                     [--name niser-digi]

With ``--recommender`` (a model saved by ``scripts/bench_niser.py --save-model DIR``) the trained
weights are registered; without it a randomly initialised model of the dataset's size, which is
what latency, CPU and memory figures depend on (``niser-mlops power-tune``, the shaping
benchmarks). Prints the registered model URI. The tracking server is ``MLFLOW_TRACKING_URI``
(``. .state/env.sh`` after ``scripts/services.py start``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow

from niser.data import load_preprocessed
from niser.inference import Recommender, item_popularity
from niser.registry import log_recommender, register
from niser.train import TrainConfig, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/diginetica"))
    p.add_argument("--recommender", type=Path, help="a saved Recommender (default: untrained)")
    p.add_argument("--name", default="niser-digi", help="registered model name")
    args = p.parse_args()
    data = load_preprocessed(args.data)
    if args.recommender:
        rec = Recommender.load(args.recommender)
    else:
        config = TrainConfig()
        rec = Recommender(build_model(data.n_items, config), config, data.vocab,
                          item_popularity(data.train, data.n_items))
    mlflow.set_experiment("models")
    with mlflow.start_run(run_name=f"{args.name}-{'trained' if args.recommender else 'untrained'}"):
        info = log_recommender(rec, data.summary(), {"recall_20": 0.0})
    print(register(info.model_uri, name=args.name).model_uri)


if __name__ == "__main__":
    main()
