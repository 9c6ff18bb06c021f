"""Where a scoring request's time goes inside MLflow's scoring server, stage by stage.

    python scripts/profile_serving.py [--data ../shared/data/diginetica] [--requests 500]

Logs an untrained Diginetica-size NISER (it times as a trained one) to a temporary SQLite MLflow,
loads it as the scoring server does (``mlflow.pyfunc.load_model``) and calls the server's own
request function, ``mlflow.pyfunc.scoring_server.invocations``, with a one-session request body
(no HTTP), batching off so that nothing waits. Prints the median time of the whole call, then
each stage's share under ``cProfile`` (cumulative time of the function that does it), scaled to
that median:

- ``json -> DataFrame``: MLflow parsing the body into a DataFrame (``_parse_json_data``);
- ``schema enforcement``: MLflow checking the input against the signature;
- ``our validation``: ``niser.pyfunc.parse_sessions`` and ``parse_k``;
- ``model``: ``Recommender.recommend`` (encode, graph, forward, top-k, decode);
- ``our output``: ``niser.pyfunc.to_rows``;
- ``output -> JSON``: MLflow writing ``{"predictions": ...}`` (``predictions_to_json``);
- ``rest``: what the call spends outside those (pyfunc wrapping, content-type handling).

Then the same request through the guard's lean path (``niser.serving_guard``, the default in a
scoring server: the contract checks the body and the pyfunc answers it, none of MLflow's stages
above run) against MLflow's path, in alternating rounds of ``--requests`` calls each, the medians
of both. The HTTP layer (uvicorn, FastAPI, the client) is what a 1-user benchmark's p50 adds on
top of these totals (``scripts/bench_serving.py``). Then, for ``--batch-sizes``, the median time of one
``Recommender.recommend`` call over that many test prefixes (what a merged batch costs), and the
largest difference between a session's scores scored in that batch and scored alone.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

STAGES: dict[str, tuple[str, ...]] = {
    "json -> DataFrame": ("_parse_json_data",),
    "schema enforcement": ("_validate_prediction_input",),
    "our validation": ("parse_sessions", "parse_k"),
    "model": ("recommend",),
    "our output": ("to_rows",),
    "output -> JSON": ("predictions_to_json",),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/diginetica"))
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--batch-sizes", default="1,2,4,6,16,64")
    args = p.parse_args()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    from niser.batching import ENV_BATCHING

    os.environ[ENV_BATCHING] = "0"  # before the model is loaded, which reads it
    import mlflow
    import torch
    from mlflow.pyfunc.scoring_server import InvocationsResponse, invocations

    from niser.data import load_preprocessed
    from niser.inference import Recommender
    from niser.registry import log_recommender
    from niser.serving_guard import guarded
    from niser.train import TrainConfig, build_model

    torch.set_num_threads(1)  # as a scoring worker of the local deployer runs
    data = load_preprocessed(args.data)
    config = TrainConfig()
    rec = Recommender.from_training(build_model(data.n_items, config), config, data)
    test = data.test
    prefixes = [[int(x) for x in data.vocab.decode(test.items[test.offsets[i]:test.offsets[i + 1]])]
                for i in range(max(sizes))]  # Diginetica test prefixes, raw ids
    with tempfile.TemporaryDirectory(prefix="niser-profile-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.create_experiment("profile", artifact_location=Path(tmp, "artifacts").as_uri())
        mlflow.set_experiment("profile")
        with mlflow.start_run():
            info = log_recommender(rec, data.summary(), {}, with_lambda=False)
        model = mlflow.pyfunc.load_model(info.model_uri)
        schema = model.metadata.get_input_schema()
        body = json.dumps({"dataframe_records": [{"session": prefixes[0]}],
                           "params": {"k": 20}})

        def call() -> None:
            out = invocations(body, "application/json", model, schema)
            assert out.status == 200, out.response

        for _ in range(50):
            call()
        times = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        total_ms = statistics.median(times) * 1e3
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.requests):
            call()
        prof.disable()
        lean = guarded(invocations, InvocationsResponse, lean=True)
        mlflow_path = guarded(invocations, InvocationsResponse)
        rounds: dict[str, list[float]] = {"lean path": [], "MLflow's path": []}
        for _ in range(3):
            for label, fn in (("lean path", lean), ("MLflow's path", mlflow_path)):
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    out = fn(body.encode(), "application/json", model, schema)
                    rounds[label].append(time.perf_counter() - t0)
                    assert out.status == 200, out.response
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    cum: dict[str, float] = {}
    for (_, _, name), (_, _, _, ct, _) in stats.items():
        cum[name] = cum.get(name, 0.0) + ct
    whole = cum["invocations"]
    print(f"invocations() median {total_ms:.3f} ms over {args.requests} one-session requests "
          f"(k=20, batching off, 1 torch thread); stage shares under cProfile, scaled to it:")
    accounted = 0.0
    for stage, names in STAGES.items():
        share = sum(cum.get(n, 0.0) for n in names) / whole
        accounted += share
        print(f"  {stage:<20} {share * total_ms:7.3f} ms  {100 * share:5.1f} %")
    print(f"  {'rest':<20} {(1 - accounted) * total_ms:7.3f} ms  {100 * (1 - accounted):5.1f} %")
    print(f"behind the guard, {len(rounds['lean path'])} calls each in 3 alternating rounds: "
          + ", ".join(f"{label} median {statistics.median(t) * 1e3:.3f} ms"
                      for label, t in rounds.items()))
    print("Recommender.recommend, one call (k=20): batch size, median ms, ms per session, "
          "largest |score in batch - score alone|")
    for n in sizes:
        batch = prefixes[:n]
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            together = rec.recommend(batch, 20)
            times.append(time.perf_counter() - t0)
        alone = [rec.recommend([b], 20)[0] for b in batch]
        diff = max(abs(x - y) for a, b in zip(together, alone, strict=True)
                   for x, y in zip(a.scores, b.scores, strict=True))
        ms = statistics.median(times) * 1e3
        print(f"  {n:>4} {ms:8.3f} {ms / n:8.3f}   {diff:.2e}")


if __name__ == "__main__":
    main()
