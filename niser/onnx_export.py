"""NISER as ONNX: the session-graph arrays and ``k`` in, the top-k items and scores out.

The graph takes the arrays of ``niser.graph.build_batch`` (nodes, adj, alias, positions, mask,
last) and ``k`` and returns the top-k item indices (1..N, padding never among them) and their
scores. The L2-normalised item table is a constant of the graph (normalised once at export,
never per call); TopK runs inside the graph and ``k`` is a run-time input (1..``MAX_K``).

Opset 17 and IR version 8, so onnxruntime 1.16 (the newest built for glibc 2.26, the Lambda
python3.11 runtime's) reads it. ``write_model_files`` adds what a runtime needs around the graph:
``vocab.json`` (raw ids of indices 1..N), ``popularity.npy`` (the fallback ranking) and
``meta.json`` (max_positions, long_sessions, n_items, max_k, onnx_opset).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from niser.contract import MAX_K

if TYPE_CHECKING:  # importing this module must not import torch
    from niser.inference import Recommender

ONNX_OPSET = 17
ONNX_IR_VERSION = 8
INPUTS = ("nodes", "adj", "alias", "positions", "mask", "last", "k")
# What a runtime of the exported files needs (read by packagers; pins are theirs to choose).
RUNTIME_REQUIREMENTS = ("numpy>=1.26", "onnxruntime>=1.16")


def export_onnx(recommender: Recommender, path: Path) -> None:
    """Write ``recommender``'s model as ONNX: session-graph arrays and ``k`` -> top-k."""
    import torch
    from torch import nn

    from niser.graph import build_batch

    model = recommender.model.eval()
    config = recommender.config

    class TopK(nn.Module):
        table: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("table", model.item_table().detach().clone())  # (N + 1, d)

        def forward(self, nodes: torch.Tensor, adj: torch.Tensor, alias: torch.Tensor,
                    positions: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                    k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            table = self.table
            s = self.model.session_embedding(table, nodes, adj, alias, positions, mask, last)
            scores = torch.matmul(self.model.sigma * s, table[1:].t())  # (B, N): no padding
            # a tensor k is traced into the TopK node's K input: k stays a run-time input
            values, indices = torch.topk(scores, k, dim=1)  # type: ignore[arg-type]
            return indices + 1, values

    sessions = [[1, 2, 1, 3], [2, 3]]
    flat = np.array([i % model.n_items + 1 for s in sessions for i in s], dtype=np.int64)
    g = build_batch(flat, np.array([0, 4, 6]), config.max_positions, config.long_sessions)
    args = (*g.tensors(), torch.tensor(min(2, model.n_items)))
    axes: dict[str, dict[int, str]] = {
        "nodes": {0: "B", 1: "n"}, "adj": {0: "B", 1: "n", 2: "n2"}, "alias": {0: "B", 1: "L"},
        "positions": {0: "B", 1: "L"}, "mask": {0: "B", 1: "L"}, "last": {0: "B"},
        "indices": {0: "B", 1: "k"}, "scores": {0: "B", 1: "k"}}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter writes opset 17 / IR 8, which onnxruntime 1.16 reads
        warnings.simplefilter("ignore")
        torch.onnx.export(TopK().eval(), args, str(path), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(INPUTS),
                          output_names=["indices", "scores"], dynamic_axes=axes)
    import onnx

    proto = onnx.load(str(path))
    if proto.ir_version > ONNX_IR_VERSION:
        proto.ir_version = ONNX_IR_VERSION
        onnx.save(proto, str(path))


def write_model_files(recommender: Recommender, directory: Path) -> None:
    """``model.onnx``, ``vocab.json``, ``popularity.npy`` and ``meta.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(recommender, directory / "model.onnx")
    recommender.vocab.save(directory / "vocab.json")
    np.save(directory / "popularity.npy", recommender.popularity)
    config = recommender.config
    meta = {"max_positions": config.max_positions, "long_sessions": config.long_sessions,
            "n_items": recommender.model.n_items, "max_k": MAX_K, "onnx_opset": ONNX_OPSET}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
