"""A torch-free pyfunc that answers the serving contract, for deployer tests.

Each session's scores over a catalogue of 200 items depend on the session's items, so different
sessions get different top-k lists; the result is deterministic, which lets a test compare what
came back through a deployment with what the same model returns in-process.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel

CATALOGUE = 200


class ContractModel(PythonModel):
    salt = 0

    def load_context(self, context: Any) -> None:
        # A different ``salt`` in the model config makes a different model (a "new version").
        self.salt = int((context.model_config or {}).get("salt", 0))

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 20))
        rows = []
        for session in model_input["session"]:
            seed = sum((i + 1) * int(x) for i, x in enumerate(session)) + 7 + 1009 * self.salt
            scores = {item: ((item * 2654435761 + seed * 40503) % 100_003) / 100_003
                      for item in range(1, CATALOGUE + 1)}
            top = sorted(scores, key=lambda item: (-scores[item], item))[:k]
            rows.append({"items": top, "scores": [scores[i] for i in top],
                         "unknown_items": [], "fallback": False})
        return pd.DataFrame(rows, columns=["items", "scores", "unknown_items", "fallback"])


mlflow.models.set_model(ContractModel())
