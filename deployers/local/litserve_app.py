"""The same MLflow pyfunc behind LitServe instead of ``mlflow models serve``: the outside
reference a local deployment runs with ``server="litserve"`` (the ``litserve`` extra).

``python -m deployers.local.litserve_app --model-uri URI --port P --workers W --max-batch N
--batch-timeout-ms T`` serves ``URI`` on 127.0.0.1:P with LitServe's own request batching:

- ``POST /invocations`` takes the scoring wire format (``deployers.wire``) and answers
  ``{"predictions": [...]}``, the rows the pyfunc returns, so every invoker, the answer check
  and the benchmark read it as they read the MLflow scoring server. ``GET /ping`` is LitServe's
  health check, 200 once its inference workers are set up.
- Batching is LitServe's (``LitAPI(max_batch_size, batch_timeout)``): an inference worker
  waits up to ``batch_timeout`` from when it starts collecting for up to ``max_batch`` requests,
  then runs them as one pyfunc call per distinct ``k`` (the rows of the call's requests in one
  DataFrame) and hands each request its own rows back. A window of 0 would make LitServe's
  collecting loop poll its queue without sleeping, a core spent on nothing, so it must be > 0.
- ``W`` inference worker processes (``workers_per_device`` on the CPU), and as many HTTP
  server processes (LitServe's default), each with the environment the deployment gives; they
  pass requests over LitServe's ZeroMQ transport (``fast_queue``), which measured faster here
  than its default multiprocessing queues (``BENCHMARKS.md``).
- A request LitServe cannot read, or one the model refuses, is answered 400 with the reason;
  as in LitServe, an error inside a batch is the whole batch's answer. (Keeping one bad
  request from failing its batch-mates is what the pyfunc's own batching does, under
  ``mlflow models serve``.)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import litserve as ls
from fastapi import HTTPException
from mlflow.exceptions import MlflowException

from deployers import wire

INVOCATIONS = "/invocations"
HEALTH = "/ping"


class PyfuncAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    """One MLflow pyfunc, batched by LitServe (module docstring)."""

    def __init__(self, model_uri: str, max_batch: int, batch_timeout_s: float) -> None:
        if not batch_timeout_s > 0:
            raise ValueError(f"batch_timeout_s={batch_timeout_s!r}: LitServe's batching window "
                             "must be > 0 (at 0 its loop polls without sleeping)")
        super().__init__(max_batch_size=max_batch, batch_timeout=batch_timeout_s,
                         api_path=INVOCATIONS)
        self.model_uri = model_uri
        self.model: Any = None

    def setup(self, device: str) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(self.model_uri)

    # unannotated on purpose: LitServe hands the parsed JSON body only to a bare ``request``
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        try:
            return wire.decode_request(request)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(400, detail=f"bad request: {exc}") from None

    def batch(self, inputs: list[tuple[list[list[int]], int]]
              ) -> list[tuple[list[list[int]], int]]:
        return inputs

    def predict(self, x: list[tuple[list[list[int]], int]]) -> list[list[Any]]:
        return answer_batch(self.model, x)

    def unbatch(self, output: list[list[Any]]) -> list[list[Any]]:
        return output

    def encode_response(self, output: list[Any]) -> dict[str, Any]:
        return {"predictions": output}


def answer_batch(model: Any, requests: Sequence[tuple[list[list[int]], int]]
                 ) -> list[list[Any]]:
    """Each request's rows, in order: one ``model.predict`` per distinct ``k`` over the sessions
    of the requests that ask for it; a model that refuses the input is a 400 naming why."""
    import pandas as pd

    out: list[list[Any]] = [[] for _ in requests]
    for k in dict.fromkeys(k for _, k in requests):
        members = [i for i, (_, kk) in enumerate(requests) if kk == k]
        sessions = [s for i in members for s in requests[i][0]]
        try:
            rows = list(model.predict(pd.DataFrame({wire.SESSION: sessions}),
                                      params={"k": k}))
        except MlflowException as exc:
            raise HTTPException(400, detail=exc.message) from None
        start = 0
        for i in members:
            n = len(requests[i][0])
            out[i] = rows[start:start + n]
            start += n
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serve an MLflow pyfunc with LitServe's batching.")
    p.add_argument("--model-uri", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-timeout-ms", type=float, default=1.0)
    p.add_argument("--request-timeout-s", type=float, default=60.0)
    args = p.parse_args(argv)
    api = PyfuncAPI(args.model_uri, args.max_batch, args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers,
                          timeout=args.request_timeout_s, healthcheck_path=HEALTH,
                          fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False,
               log_level="warning")


if __name__ == "__main__":
    main()
