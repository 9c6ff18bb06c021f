"""The SageMaker data plane: the invoker, and local serving of endpoints for tests and local runs.

``SageMakerInvoker`` calls ``sagemaker-runtime`` ``InvokeEndpoint`` with the pyfunc serving
contract (``{"dataframe_records": [{"session": [...]}, ...], "params": {"k": k}}`` in,
``{"predictions": [...]}`` out). It is the same code against AWS and locally: only in local mode is
``endpoint_url`` passed, and only to this client, pointing at the nginx data plane.

``LocalServing`` gives a control-plane endpoint (in moto, say) a real model server: it reads the
model archive back from S3 exactly as SageMaker would, unpacks it, starts ``mlflow models serve``
on it with the container's environment, and routes ``/endpoints/<name>/invocations`` to it.
Replacing a route (blue/green) starts the new server before the old one stops. The servers and
nginx belong to the process that deployed: they stop at its exit, and only that process's
invokers reach them (another process's invoker follows its own environment, e.g.
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deployers import aws, dataplane
from deployers.base import InvocationError, Prediction

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def control_plane_is_local() -> bool:
    """True when the SageMaker control plane is reached on this machine (e.g. a moto server)."""
    for var in ("AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return urlparse(os.environ[var]).hostname in _LOCAL_HOSTS
    return False


class SageMakerInvoker:
    """Calls ``InvokeEndpoint`` on one endpoint; thread-safe (one boto3 client, pooled)."""

    def __init__(self, name: str, endpoint_url: str | None = None) -> None:
        self.name = name
        # No retries: a benchmark must see every failure and every latency as it happened.
        config = Config(max_pool_connections=64, retries={"total_max_attempts": 1},
                        read_timeout=65, connect_timeout=10)
        # endpoint_url is set only for the local data plane; otherwise the environment rules.
        self._client = aws.session().client(
            "sagemaker-runtime", endpoint_url=endpoint_url, config=config)

    def __call__(self, sessions: list[list[int]], k: int = 20) -> Prediction:
        body = json.dumps({"dataframe_records": [{"session": list(s)} for s in sessions],
                           "params": {"k": k}})
        try:
            resp = self._client.invoke_endpoint(
                EndpointName=self.name, ContentType="application/json",
                Accept="application/json", Body=body)
            raw = json.loads(resp["Body"].read())
            rows = raw["predictions"]
            return Prediction(items=[[int(i) for i in r["items"]] for r in rows],
                              scores=[[float(x) for x in r["scores"]] for r in rows], raw=raw)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            raise InvocationError(
                f"invoke_endpoint {self.name!r} failed: {exc}",
                status=meta.get("HTTPStatusCode"),
                body=str(exc.response.get("Error", {}).get("Message", ""))) from exc
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            raise InvocationError(f"invoke_endpoint {self.name!r} failed: {exc!r}") from exc


class LocalServing:
    """Real scoring servers for the endpoints of this process, behind ``dataplane.shared()``."""

    _served: ClassVar[dict[str, tuple[dataplane.ScoringServer, Path]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def url(cls, name: str) -> str | None:
        """The data-plane URL serving ``name``, or None when it is not served here."""
        return dataplane.shared().url if name in cls._served else None

    @classmethod
    def serve(cls, name: str, model_name: str, variant: str, workers: int | None) -> None:
        """Serve SageMaker model ``model_name`` as endpoint ``name``; replaces any earlier one."""
        container = aws.client("sagemaker").describe_model(ModelName=model_name)[
            "PrimaryContainer"]
        url = urlparse(container["ModelDataUrl"])
        model_dir = Path(tempfile.mkdtemp(prefix=f"niser-sm-{name}-"))
        try:
            archive = model_dir / "model.tar.gz"
            aws.client("s3").download_file(url.netloc, url.path.lstrip("/"), str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(model_dir / "model", filter="data")
            server = dataplane.ScoringServer.start(
                str(model_dir / "model"), model_dir / "serve.log", workers=workers,
                env=dict(container.get("Environment", {})))
        except BaseException:
            shutil.rmtree(model_dir, ignore_errors=True)
            raise
        with cls._lock:
            old = cls._served.get(name)
            cls._served[name] = (server, model_dir)
        try:
            dataplane.shared().route(name, server.port, variant)
        except BaseException:
            cls.stop(name)
            raise
        if old is not None:
            old[0].stop()
            shutil.rmtree(old[1], ignore_errors=True)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every server of this process (run at interpreter exit: none may outlive it)."""
        for name in list(cls._served):
            cls.stop(name)

    @classmethod
    def stop(cls, name: str) -> None:
        """Stop serving ``name``; absent is not an error."""
        with cls._lock:
            served = cls._served.pop(name, None)
        dataplane.shared().unroute(name)
        if served is not None:
            served[0].stop()
            shutil.rmtree(served[1], ignore_errors=True)


atexit.register(LocalServing.stop_all)
