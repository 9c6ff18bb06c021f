"""Lambda handler of the container image: the torch ``Recommender``, same contract as the zip.

Loaded once per execution environment at import (Init). Request and answer shapes are those of
``niser/lambda_handler.py`` (the scoring server's body, also inside an API-Gateway ``body``);
a contract violation answers ``statusCode`` 400 with a message naming row and field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from niser.contract import RequestError, event_request, is_gateway_event, parse_request
from niser.inference import Recommender

RECOMMENDER = Recommender.load(Path(os.environ.get("NISER_MODEL_DIR") or
                                    Path(__file__).resolve().parent / "model"))


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Score one request with the torch model."""
    gateway = is_gateway_event(event)
    payload: dict[str, Any]
    try:
        sessions, k = parse_request(event_request(event))
        k = min(k, RECOMMENDER.model.n_items)
        status, payload = 200, {"predictions": [asdict(r) for r in
                                                RECOMMENDER.recommend(sessions, k)]}
    except RequestError as exc:
        status, payload = 400, {"error_code": "BAD_REQUEST", "message": str(exc)}
    if gateway:
        return {"statusCode": status, "headers": {"Content-Type": "application/json"},
                "body": json.dumps(payload)}
    return payload if status == 200 else {"statusCode": status, **payload}
