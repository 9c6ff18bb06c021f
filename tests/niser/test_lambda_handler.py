"""NISER's Lambda handler and ONNX export: top-k equals torch, the request contract holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from niser.onnx_export import write_model_files
from tests.niser.topk import compare_topk


def _ragged(sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sessions], out=offsets[1:])
    return np.concatenate(sessions).astype(np.int64), offsets


@pytest.fixture(scope="module")
def onnx_model(tiny_recommender, tmp_path_factory: pytest.TempPathFactory):
    """The handler's ``Model`` over the tiny recommender's exported files (in this process)."""
    from niser.lambda_handler import Model

    directory = tmp_path_factory.mktemp("lambda-model")
    write_model_files(tiny_recommender, directory)
    return Model.load(directory)


def test_onnx_topk_equals_torch_on_tiny_model(tiny_recommender, onnx_model):
    rng = np.random.default_rng(1)
    n = tiny_recommender.model.n_items
    # short, long (over the 12 positions), repeated-item sessions
    sessions = [rng.integers(1, n + 1, size=int(rng.integers(1, 30))).tolist() for _ in range(300)]
    sessions += [[1, 2, 1, 3], [5, 5, 5, 5], [n]]
    flat, offsets = _ragged(sessions)
    for k in (1, 20, n):
        want_items, want_scores = tiny_recommender.topk_indices(flat, offsets, k)
        got_items, got_scores = onnx_model.topk(flat, offsets, k)
        assert got_items.shape == (len(sessions), k)
        assert 0 not in got_items, "the padding index must never be recommended"
        exact, problems = compare_topk(want_items, want_scores, got_items, got_scores)
        assert not problems, problems[:5]
        assert exact >= len(sessions) - 2, f"only {exact}/{len(sessions)} rows equal exactly"


def test_handler_answers_like_the_recommender(tiny_recommender, onnx_model):
    vocab = tiny_recommender.vocab.raw_ids.tolist()
    sessions = [vocab[:3], [vocab[5], 999_999_999], [999_999_998], [], vocab[::-1][:15]]
    want = tiny_recommender.recommend(sessions, 20)
    got = onnx_model.recommend(sessions, 20)
    for w, g in zip(want, got, strict=True):
        assert g["items"] == w.items
        assert np.allclose(g["scores"], w.scores, atol=1e-4)
        assert g["unknown_items"] == w.unknown_items
        assert g["fallback"] == w.fallback
    assert got[2]["fallback"] and got[2]["unknown_items"] == [999_999_998]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"dataframe_records": [{"session": [1]}, {"session": [2, "x"]}]},
     "row 1, field 'session', position 1"),
    ({"dataframe_records": [{"session": [1.0]}]}, "row 0, field 'session', position 0"),
    ({"dataframe_records": [{"session": [-3]}]}, "item id -3 is not a positive integer"),
    ({"dataframe_records": [{"session": [True]}]}, "must be an integer"),
    ({"dataframe_records": [{"session": "1 2"}]}, "row 0, field 'session'"),
    ({"dataframe_records": [{"items": [1]}]}, "row 0, field 'session': missing"),
    ({"dataframe_records": [{"session": [1]}], "params": {"k": 0}}, "param 'k': 0 is outside"),
    ({"dataframe_records": [{"session": [1]}], "params": {"k": 1001}}, "outside 1..1000"),
    ({"dataframe_records": [{"session": [1]}] * 10_001}, "more than the 10000 allowed"),
    ({"instances": [[1]]}, "needs 'dataframe_records' or 'dataframe_split'"),
])
def test_handler_refuses_bad_requests_naming_row_and_field(onnx_model, monkeypatch, body,
                                                           fragment):
    import niser.lambda_handler as handler_module

    monkeypatch.setattr(handler_module, "_MODEL", onnx_model)
    direct = handler_module.handler(body, None)
    assert direct["statusCode"] == 400 and direct["error_code"] == "BAD_REQUEST"
    assert fragment in direct["message"]
    gateway = handler_module.handler({"body": json.dumps(body)}, None)
    assert gateway["statusCode"] == 400 and fragment in json.loads(gateway["body"])["message"]


def test_handler_reads_dataframe_split_and_gateway_events(tiny_recommender, onnx_model,
                                                          monkeypatch):
    import niser.lambda_handler as handler_module

    monkeypatch.setattr(handler_module, "_MODEL", onnx_model)
    raw = tiny_recommender.vocab.raw_ids[:4].tolist()
    split = {"dataframe_split": {"columns": ["session"], "data": [[raw]]}, "params": {"k": 5}}
    out = handler_module.handler(split, None)
    assert out["predictions"][0]["items"] == tiny_recommender.recommend([raw], 5)[0].items
    gateway = handler_module.handler({"body": json.dumps(split)}, None)
    assert gateway["statusCode"] == 200
    assert json.loads(gateway["body"]) == json.loads(json.dumps(out))


def test_diginetica_size_model_top20_equals_torch_on_1000_test_sessions(shared_data: Path,
                                                                          tmp_path):
    """A randomly initialised model of Diginetica's size (43,098 x 100) on the real test
    prefixes: the check is the export (constant table, padding, TopK), not accuracy."""
    import torch

    from niser.inference import Recommender
    from niser.lambda_handler import Model
    from niser.train import TrainConfig, build_model
    from niser.vocab import Vocabulary

    lines = (shared_data / "diginetica" / "test.tsv").read_text().splitlines()[:1000]
    sessions = [[int(x) for x in line.split("\t")[0].split()] for line in lines]
    torch.manual_seed(0)
    config = TrainConfig.model_validate({"dim": 100, "device": "cpu"})
    n_items = 43097
    rec = Recommender(build_model(n_items, config), config, Vocabulary.identity(n_items),
                      np.ones(n_items + 1, dtype=np.int64))
    write_model_files(rec, tmp_path)
    model = Model.load(tmp_path)
    flat, offsets = _ragged(sessions)
    want_items, want_scores = rec.topk_indices(flat, offsets, 20)
    got_items, got_scores = model.topk(flat, offsets, 20)
    exact, problems = compare_topk(want_items, want_scores, got_items, got_scores)
    print(f"\nDiginetica-size: {exact}/1000 top-20 lists identical, the rest differ only in ties")
    assert not problems, problems[:5]
    assert exact >= 990
