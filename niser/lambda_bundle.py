"""The Lambda function code of a NISER model, logged with the model as artifact ``lambda``.

``write_bundle`` lays out what a Lambda zip holds apart from its wheels::

    lambda_handler.py   niser/lambda_handler.py (handler ``lambda_handler.handler``)
    niser/              __init__.py, graph.py, vocab.py, contract.py, vendored unchanged: they
                        need numpy and the standard library only
    model/              model.onnx, vocab.json, popularity.npy, meta.json (niser.onnx_export)
    requirements.txt    what the handler imports: numpy and onnxruntime, with lower bounds

torch (754 MB installed, three times Lambda's 250 MB unzipped limit) stays out: the handler runs
the ONNX graph with onnxruntime. A packager adds wheels that satisfy ``requirements.txt`` for
its runtime and architecture and zips the result.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from niser.onnx_export import RUNTIME_REQUIREMENTS, write_model_files

if TYPE_CHECKING:
    from niser.inference import Recommender

ARTIFACT_KEY = "lambda"
HANDLER = "lambda_handler.handler"
VENDORED = ("__init__.py", "graph.py", "vocab.py", "contract.py")
_HERE = Path(__file__).resolve().parent


def write_bundle(recommender: Recommender, root: Path) -> Path:
    """Write the function code of ``recommender`` into ``root`` (created); returns ``root``."""
    (root / "niser").mkdir(parents=True, exist_ok=True)
    shutil.copy2(_HERE / "lambda_handler.py", root / "lambda_handler.py")
    for name in VENDORED:
        shutil.copy2(_HERE / name, root / "niser" / name)
    write_model_files(recommender, root / "model")
    (root / "requirements.txt").write_text("\n".join(RUNTIME_REQUIREMENTS) + "\n")
    return root
