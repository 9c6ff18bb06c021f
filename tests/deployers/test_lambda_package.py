"""The Lambda zip package: ONNX top-k equals torch, size within Lambda's limit, handler contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployers.lambda_package import MAX_UNZIPPED_BYTES, write_model_files
from tests.deployers.lambda_support import build_or_skip, compare_topk


def _ragged(sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sessions], out=offsets[1:])
    return np.concatenate(sessions).astype(np.int64), offsets


@pytest.fixture(scope="module")
def onnx_model(tiny_recommender, tmp_path_factory: pytest.TempPathFactory):
    """The handler's ``Model`` over the tiny recommender's exported files (in this process)."""
    from deployers.lambda_handler import Model

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
    ({"dataframe_records": [{"items": [1]}]}, "row 0: expected an object with a 'session'"),
    ({"dataframe_records": [{"session": [1]}], "params": {"k": 0}}, "'params.k': 0 is outside"),
    ({"dataframe_records": [{"session": [1]}], "params": {"k": 1001}}, "outside 1..1000"),
    ({"dataframe_records": [{"session": [1]}] * 10_001}, "limit is 10000"),
    ({"instances": [[1]]}, "needs 'dataframe_records' or 'dataframe_split'"),
])
def test_handler_refuses_bad_requests_naming_row_and_field(onnx_model, monkeypatch, body,
                                                           fragment):
    import deployers.lambda_handler as handler_module

    monkeypatch.setattr(handler_module, "_MODEL", onnx_model)
    direct = handler_module.handler(body, None)
    assert direct["statusCode"] == 400 and direct["error_code"] == "BAD_REQUEST"
    assert fragment in direct["message"]
    gateway = handler_module.handler({"body": json.dumps(body)}, None)
    assert gateway["statusCode"] == 400 and fragment in json.loads(gateway["body"])["message"]


def test_handler_reads_dataframe_split_and_gateway_events(tiny_recommender, onnx_model,
                                                          monkeypatch):
    import deployers.lambda_handler as handler_module

    monkeypatch.setattr(handler_module, "_MODEL", onnx_model)
    raw = tiny_recommender.vocab.raw_ids[:4].tolist()
    split = {"dataframe_split": {"columns": ["session"], "data": [[raw]]}, "params": {"k": 5}}
    out = handler_module.handler(split, None)
    assert out["predictions"][0]["items"] == tiny_recommender.recommend([raw], 5)[0].items
    gateway = handler_module.handler({"body": json.dumps(split)}, None)
    assert gateway["statusCode"] == 200
    assert json.loads(gateway["body"]) == json.loads(json.dumps(out))


@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_package_fits_lambda_and_holds_no_torch(tiny_recommender, tmp_path, architecture):
    package = build_or_skip(tiny_recommender, tmp_path, architecture)
    print(f"\n{architecture}: {package.unzipped_bytes / 2**20:.1f} MiB unzipped, "
          f"{package.zipped_bytes / 2**20:.1f} MiB zipped")
    assert package.unzipped_bytes <= MAX_UNZIPPED_BYTES
    names = {p.name for p in package.root.iterdir()}
    assert {"lambda_handler.py", "niser", "model", "numpy", "onnxruntime"} <= names
    assert "torch" not in names
    assert not list(package.root.rglob("__pycache__")) and not list(package.root.rglob("tests"))
    machine = "aarch64" if architecture == "arm64" else "x86_64"
    assert list(package.root.glob("numpy.libs/*")) or list(package.root.rglob(f"*{machine}*.so"))
    assert all(machine in p.name for p in package.root.glob("numpy/core/_multiarray_umath*.so"))


def test_package_runs_in_an_interpreter_that_sees_only_it(tiny_recommender, tmp_path):
    """python -S with the package alone on sys.path: no venv package (torch, mlflow) leaks in."""
    package = build_or_skip(tiny_recommender, tmp_path)
    raw = tiny_recommender.vocab.raw_ids[:3].tolist()
    script = ("import json, sys, lambda_handler as h\n"
              f"out = h.handler({{'dataframe_records': [{{'session': {raw}}}]}}, None)\n"
              "assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
              "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-S", "-c", script], cwd=package.root,
                          env={"PYTHONPATH": str(package.root)}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)["predictions"][0]
    assert got["items"] == tiny_recommender.recommend([raw], 20)[0].items


def test_diginetica_size_model_top20_equals_torch_on_1000_test_sessions(shared_data: Path,
                                                                          tmp_path):
    """A randomly initialised model of Diginetica's size (43,098 x 100) on the real test
    prefixes: the check is the export (constant table, padding, TopK), not accuracy."""
    import torch

    from deployers.lambda_handler import Model
    from niser.inference import Recommender
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
