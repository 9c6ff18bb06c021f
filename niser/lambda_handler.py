"""The AWS Lambda handler of the NISER zip package: numpy + onnxruntime, no torch.

Shipped at the root of the function code as ``lambda_handler.py`` (handler
``lambda_handler.handler``) beside ``niser/`` (``graph.py``, ``vocab.py``, ``contract.py``
vendored as they are in the repo) and ``model/`` (``niser.lambda_bundle`` lays it out)::

    model/model.onnx      (nodes, adj, alias, positions, mask, last, k) -> (indices, scores)
    model/vocab.json      raw ids of indices 1..N
    model/popularity.npy  (N + 1,) training clicks per index: the fallback ranking
    model/meta.json       max_positions, long_sessions, n_items, max_k

Promises:

- The model is loaded once per execution environment: at import when running under the Lambda
  runtime (``AWS_LAMBDA_RUNTIME_API`` set), so it counts as the environment's Init, not as a
  request; elsewhere on the first call.
- Input is the scoring server's body (``dataframe_records`` / ``dataframe_split`` and
  ``params.k``), either as the event itself or as the ``body`` string of an API-Gateway-style
  event (base64 when ``isBase64Encoded``). The answer is ``{"predictions": [{"items",
  "scores", "unknown_items", "fallback"}, ...]}``, the fields of ``niser.inference.Recommendation``.
  For an API-Gateway event it is wrapped as ``{"statusCode": 200, "headers", "body"}``.
- A request that breaks the contract (``niser.contract``) answers ``statusCode`` 400 with
  ``error_code`` ``BAD_REQUEST`` and a message naming row and field; it never raises. So does a
  malformed event: ``isBase64Encoded`` that is not a boolean, a ``body`` that is not a string,
  bad base64, a body that is not UTF-8 JSON. The status and message are those the scoring server
  gives the same body (both use ``niser.contract``).
- onnxruntime gets one intra-op thread per vCPU that Lambda would give the function's memory
  size (1,769 MB = 1 vCPU, at most 6), read from ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from niser.contract import RequestError, event_request, is_gateway_event, parse_request
from niser.graph import build_batch
from niser.vocab import Vocabulary

INPUTS = ("nodes", "adj", "alias", "positions", "mask", "last")
MB_PER_VCPU = 1769


def model_dir() -> Path:
    """``NISER_MODEL_DIR`` if set, else ``model/`` beside this file."""
    return Path(os.environ.get("NISER_MODEL_DIR") or Path(__file__).resolve().parent / "model")


def threads_for_memory(memory_mb: int) -> int:
    """vCPUs Lambda allocates to ``memory_mb`` (proportional, 1,769 MB each, 1..6)."""
    return max(1, min(6, memory_mb // MB_PER_VCPU))


@dataclass
class Model:
    """The loaded package: ONNX session, vocabulary, fallback ranking and graph settings."""

    session: ort.InferenceSession
    vocab: Vocabulary
    popular: np.ndarray  # item indices, most popular first, padding excluded
    popular_scores: np.ndarray  # (N + 1,) share of training clicks per index
    max_positions: int
    long_sessions: str
    max_k: int

    @classmethod
    def load(cls, path: Path) -> Model:
        meta = json.loads((path / "meta.json").read_text())
        options = ort.SessionOptions()
        memory = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769"))
        options.intra_op_num_threads = threads_for_memory(memory)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path / "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        pop = np.load(path / "popularity.npy").astype(np.float64)
        pop[0] = -1.0  # never recommend padding (same rule as niser.inference.Recommender)
        return cls(session, Vocabulary.load(path / "vocab.json"),
                   np.argsort(-pop, kind="stable"), pop / max(pop.sum(), 1.0),
                   int(meta["max_positions"]), str(meta["long_sessions"]), int(meta["max_k"]))

    def topk(self, flat: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores (B, k) for ragged sessions of known indices."""
        g = build_batch(flat, offsets, self.max_positions, self.long_sessions)  # type: ignore[arg-type]
        feeds = dict(zip(INPUTS, (g.nodes, g.adj, g.alias, g.positions, g.mask, g.last),
                         strict=True))
        feeds["k"] = np.array(k, dtype=np.int64)
        indices, scores = self.session.run(None, feeds)
        return indices, scores

    def recommend(self, sessions: list[list[int]], k: int) -> list[dict[str, Any]]:
        """Per session: top-k raw ids and scores, unknown ids, fallback flag.

        A ``k`` above the number of items gives every item (as the scoring server does).
        """
        k = min(k, len(self.vocab), self.max_k)
        batch = self.vocab.encode_batch(sessions)
        out: list[dict[str, Any] | None] = [None] * len(sessions)
        if batch.rows:
            idx, val = self.topk(batch.flat, batch.offsets, k)
            raw = self.vocab.decode(idx)
            for row, i in enumerate(batch.rows):
                out[i] = {"items": raw[row].tolist(), "scores": val[row].tolist(),
                          "unknown_items": batch.unknown[i], "fallback": False}
        pop_idx = self.popular[:k]
        pop_raw = self.vocab.decode(pop_idx).tolist()
        pop_val = self.popular_scores[pop_idx].tolist()
        return [r if r is not None else {"items": pop_raw, "scores": pop_val,
                                         "unknown_items": batch.unknown[i], "fallback": True}
                for i, r in enumerate(out)]


_MODEL: Model | None = None


def get_model() -> Model:
    """The environment's model, loaded on first use."""
    global _MODEL
    if _MODEL is None:
        _MODEL = Model.load(model_dir())
    return _MODEL


def _answer(status: int, payload: dict[str, Any], gateway: bool) -> dict[str, Any]:
    if gateway:
        return {"statusCode": status, "headers": {"Content-Type": "application/json"},
                "body": json.dumps(payload)}
    return payload if status == 200 else {"statusCode": status, **payload}


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Score one request; see the module docstring for the shapes in and out."""
    gateway = is_gateway_event(event)
    try:
        body = event_request(event)
        sessions, k = parse_request(body)
        predictions = get_model().recommend(sessions, k)
    except RequestError as exc:
        return _answer(400, {"error_code": "BAD_REQUEST", "message": str(exc)}, gateway)
    return _answer(200, {"predictions": predictions}, gateway)


if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # inside an execution environment: load at Init
    get_model()
