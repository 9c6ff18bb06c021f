"""The invoker of a SageMaker deployment: boto3 ``sagemaker-runtime`` ``InvokeEndpoint``.

The body is the scoring wire format (``deployers.wire``). It is the same code against AWS and
locally: only for a local stand-in is ``endpoint_url`` passed, and only to this client, pointing
at the stand-in's data plane (``deployers.standins``). No retries: a benchmark must see every
failure and every latency as it happened. A failure to connect (``aws.connection_failed``) sets
``InvocationError.connection``.
"""

from __future__ import annotations

import json

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deployers import aws, wire
from deployers.base import InvocationError, Prediction


class SageMakerInvoker:
    """Calls ``InvokeEndpoint`` on one endpoint; thread-safe (one boto3 client, pooled)."""

    def __init__(self, name: str, endpoint_url: str | None = None) -> None:
        self.name = name
        config = Config(max_pool_connections=64, retries={"total_max_attempts": 1},
                        read_timeout=65, connect_timeout=10)
        self._client = aws.session().client(
            "sagemaker-runtime", endpoint_url=endpoint_url, config=config)

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        try:
            resp = self._client.invoke_endpoint(
                EndpointName=self.name, ContentType="application/json",
                Accept="application/json", Body=wire.encode_request(sessions, k))
            return wire.decode_response(json.loads(resp["Body"].read()), len(sessions))
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            raise InvocationError(
                f"invoke_endpoint {self.name!r} failed: {exc}",
                status=meta.get("HTTPStatusCode"),
                body=str(exc.response.get("Error", {}).get("Message", ""))) from exc
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            raise InvocationError(f"invoke_endpoint {self.name!r} failed: {exc!r}",
                                  connection=aws.connection_failed(exc)) from exc
