"""The invoker of a Lambda deployment: boto3 ``lambda.invoke``, unchanged, on the alias.

``endpoint_url`` (the local stand-in's URL) applies to this data-plane client only; the control
plane keeps ``deployers.aws.client``. The payload is the scoring wire format
(``deployers.wire``). No retries: a benchmark must see every throttle (429) and every latency
as it happened. Each call asks for the log tail (``LogType='Tail'``) and puts
the parsed REPORT line in ``Prediction.raw["lambda_report"]`` (duration_ms, billed_ms,
max_memory_mb, init_ms on a cold start), so cold starts can be told apart, and the version that
answered in ``Prediction.raw["executed_version"]``. A failure to connect
(``aws.connection_failed``) sets ``InvocationError.connection``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deployers import aws, wire
from deployers.base import InvocationError, Prediction

_FIELDS = {"Duration": "duration_ms", "Billed Duration": "billed_ms",
           "Max Memory Used": "max_memory_mb", "Init Duration": "init_ms",
           "Memory Size": "memory_mb"}
_REPORT_FIELD = re.compile(r"(Duration|Billed Duration|Memory Size|Max Memory Used|"
                           r"Init Duration): ([0-9.]+)")


def parse_report(log_tail: str) -> dict[str, float]:
    """The numbers of the last REPORT line in a Lambda log tail ({} when there is none)."""
    lines = [line for line in log_tail.splitlines() if line.startswith("REPORT ")]
    if not lines:
        return {}
    return {_FIELDS[k]: float(v) for k, v in _REPORT_FIELD.findall(lines[-1])}


class LambdaInvoker:
    """Sends one request to a function (qualifier: its alias); thread-safe."""

    def __init__(self, function: str, qualifier: str | None, endpoint_url: str | None = None,
                 read_timeout_s: float = 60.0) -> None:
        self.function = function
        self.qualifier = qualifier
        config = Config(max_pool_connections=64, retries={"total_max_attempts": 1},
                        read_timeout=read_timeout_s, connect_timeout=10)
        self.client = aws.session().client("lambda", endpoint_url=endpoint_url, config=config)

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        kwargs: dict[str, Any] = {"FunctionName": self.function,
                                  "Payload": wire.encode_request(sessions, k), "LogType": "Tail"}
        if self.qualifier:
            kwargs["Qualifier"] = self.qualifier
        try:
            out = self.client.invoke(**kwargs)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise InvocationError(f"invoke {self.function}: {exc}", status=status,
                                  body=str(exc.response.get("Error", {}))) from exc
        except BotoCoreError as exc:
            raise InvocationError(f"invoke {self.function}: {exc}",
                                  connection=aws.connection_failed(exc)) from exc
        text = out["Payload"].read().decode()
        report = parse_report(base64.b64decode(out.get("LogResult", "")).decode(errors="replace"))
        if out.get("FunctionError"):
            raise InvocationError(f"{self.function} failed ({out['FunctionError']}): "
                                  f"{text[:500]}", status=out.get("StatusCode"), body=text)
        payload = json.loads(text)
        if isinstance(payload, dict) and "predictions" not in payload:
            raise InvocationError(f"{self.function} answered {payload.get('statusCode')}: "
                                  f"{payload.get('message', text[:500])}",
                                  status=payload.get("statusCode"), body=text)
        try:
            pred = wire.decode_response(payload, len(sessions))
        except ValueError as exc:
            raise InvocationError(f"{self.function} answered an unexpected body ({exc}): "
                                  f"{text[:500]}", status=out.get("StatusCode"), body=text
                                  ) from exc
        return Prediction(items=pred.items, scores=pred.scores,
                          raw={"predictions": pred.raw["predictions"], "lambda_report": report,
                               "executed_version": out.get("ExecutedVersion")})
