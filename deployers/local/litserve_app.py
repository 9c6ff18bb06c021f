"""The same MLflow pyfunc behind LitServe instead of ``mlflow models serve``: the outside
reference a local deployment runs with ``server="litserve"`` (the ``litserve`` extra).

``python -m deployers.local.litserve_app --model-uri URI --port P --workers W --max-batch N
--batch-timeout-ms T`` serves ``URI`` on 127.0.0.1:P with LitServe's own request batching:

- ``POST /invocations`` takes the scoring wire format (``deployers.wire``: ``dataframe_records``
  or ``dataframe_split`` with a ``session`` column, optional ``params``) and answers
  ``{"predictions": [...]}``, the rows the pyfunc returns, so every invoker, the answer check
  and the benchmark read it as they read the MLflow scoring server. ``GET /ping`` is LitServe's
  health check, 200 once its inference workers are set up.
- Batching is LitServe's (``LitAPI(max_batch_size, batch_timeout)``, ``max_batch`` >= 2: at 1
  LitServe runs its unbatched loop): an inference worker collects for ``batch_timeout`` from
  when it starts, up to ``max_batch`` requests, then runs them as one pyfunc call per distinct
  ``params`` (the sessions of those requests in one DataFrame, the params passed as sent, so the
  pyfunc and MLflow check them as they check a request of their own) and hands each request its
  own rows back. When that merged call is refused (a merged batch can pass a size limit that
  none of its requests does), each of its requests is called alone instead. A window of 0 would
  make LitServe's collecting loop poll its queue without sleeping, so it must be > 0.
- ``W`` inference worker processes (``workers_per_device`` on the CPU), and as many HTTP
  server processes (LitServe's default, on the HTTP stack LitServe picks: httptools and uvloop
  here, where the scoring server keeps MLflow's h11 and asyncio), each with the environment the
  deployment gives; they pass requests over LitServe's ZeroMQ transport (``fast_queue``), which
  measured faster here than its default multiprocessing queues (``BENCHMARKS.md``).
- A body without the wire format's fields, or a request the pyfunc refuses alone, is answered
  400 with the reason. As in LitServe, an error inside a batch is the whole batch's answer, and
  a body that is not JSON is LitServe's own 500. (Keeping one bad request from failing its
  batch-mates, and the contract's exact errors, are what ``mlflow models serve`` with the
  pyfunc's own batching gives.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import litserve as ls
from fastapi import HTTPException
from mlflow.exceptions import MlflowException

from deployers import wire

INVOCATIONS = "/invocations"
HEALTH = "/ping"
Request = tuple[list[Any], Any]  # (the sessions as sent, the params as sent)


class PyfuncAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    """One MLflow pyfunc, batched by LitServe (module docstring)."""

    def __init__(self, model_uri: str, max_batch: int, batch_timeout_s: float) -> None:
        if not batch_timeout_s > 0:
            raise ValueError(f"batch_timeout_s={batch_timeout_s!r}: LitServe's batching window "
                             "must be > 0 (at 0 its loop polls without sleeping)")
        if max_batch < 2:
            raise ValueError(f"max_batch={max_batch!r}: at least 2 (at 1 LitServe does not "
                             "batch, and hands predict one request, not a list)")
        super().__init__(max_batch_size=max_batch, batch_timeout=batch_timeout_s,
                         api_path=INVOCATIONS)
        self.model_uri = model_uri
        self.model: Any = None

    def setup(self, device: str) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(self.model_uri)

    # unannotated on purpose: LitServe hands the parsed JSON body only to a bare ``request``
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return read_request(request)

    def batch(self, inputs: list[Request]) -> list[Request]:
        return inputs

    def predict(self, x: list[Request]) -> list[list[Any]]:
        return answer_batch(self.model, x)

    def unbatch(self, output: list[list[Any]]) -> list[list[Any]]:
        return output

    def encode_response(self, output: list[Any]) -> dict[str, Any]:
        return {"predictions": output}


def read_request(body: Any) -> Request:
    """The sessions and params of a wire-format body, as sent (the pyfunc checks their values);
    a 400 naming what is missing."""
    if not isinstance(body, dict):
        raise HTTPException(400, detail=f"the body must be a JSON object with "
                                        f"'dataframe_records' or 'dataframe_split', got "
                                        f"{type(body).__name__}")
    try:
        return wire.request_columns(body)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise HTTPException(400, detail=f"bad request: {exc!s} (a {wire.SESSION!r} column "
                                        "in 'dataframe_records' or 'dataframe_split')") from None


def answer_batch(model: Any, requests: Sequence[Request]) -> list[list[Any]]:
    """Each request's rows, in order: one ``model.predict`` per distinct params over the
    sessions of the requests that sent them; when the model refuses that merged call, each of
    those requests alone; a request refused alone is a 400 naming why."""
    out: list[list[Any]] = [[] for _ in requests]
    groups: dict[str, list[int]] = {}
    for i, (_, params) in enumerate(requests):
        groups.setdefault(json.dumps(params, sort_keys=True), []).append(i)
    for members in groups.values():
        params = requests[members[0]][1]
        try:
            rows = _predict(model, [s for i in members for s in requests[i][0]], params)
        except MlflowException as exc:
            if len(members) == 1:
                raise HTTPException(400, detail=exc.message) from None
            rows = [row for i in members for row in answer_batch(model, [requests[i]])[0]]
        start = 0
        for i in members:
            n = len(requests[i][0])
            out[i] = rows[start:start + n]
            start += n
    return out


def _predict(model: Any, sessions: list[Any], params: Any) -> list[Any]:
    import pandas as pd

    return list(model.predict(pd.DataFrame({wire.SESSION: sessions}), params=params))


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
