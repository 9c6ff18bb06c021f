"""The SageMaker stand-in: real scoring servers for endpoints whose control plane is local.

``LocalSageMaker`` gives a control-plane endpoint (in moto, say) a real model server: it reads
the model archive back from S3 exactly as SageMaker would, unpacks it, starts ``mlflow models
serve`` on it with the container's environment, and routes ``/endpoints/<name>/invocations`` to
it on its data plane (``sagemaker_dataplane.DataPlane``). Replacing a route (blue/green) starts
the new server before the old one stops. It belongs to the process's ``StandIns``: its servers
and nginx stop with it, and only that process's invokers reach them.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from deployers import aws
from deployers.standins.sagemaker_dataplane import DataPlane, ScoringServer


class LocalSageMaker:
    """Scoring servers for the endpoints of this process, behind one data plane."""

    def __init__(self) -> None:
        self.dataplane = DataPlane()
        self._served: dict[str, tuple[ScoringServer, Path]] = {}
        self._lock = threading.Lock()

    def url(self, name: str) -> str | None:
        """The data-plane URL serving ``name``, or None when it is not served here."""
        with self._lock:
            return self.dataplane.url if name in self._served else None

    def endpoints(self) -> list[str]:
        """Names of the endpoints served here."""
        with self._lock:
            return sorted(self._served)

    def server(self, name: str) -> ScoringServer:
        """The scoring server of ``name``; ``KeyError`` when it is not served here."""
        with self._lock:
            return self._served[name][0]

    def serve(self, name: str, model_name: str, variant: str, workers: int | None) -> None:
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
            server = ScoringServer.start(
                str(model_dir / "model"), model_dir / "serve.log", workers=workers,
                env=dict(container.get("Environment", {})))
        except BaseException:
            shutil.rmtree(model_dir, ignore_errors=True)
            raise
        with self._lock:
            old = self._served.get(name)
            self._served[name] = (server, model_dir)
        try:
            self.dataplane.route(name, server.port, variant)
        except BaseException:
            self.stop(name)
            raise
        if old is not None:
            old[0].stop()
            shutil.rmtree(old[1], ignore_errors=True)

    def stop(self, name: str) -> None:
        """Stop serving ``name``; absent is not an error."""
        with self._lock:
            served = self._served.pop(name, None)
        self.dataplane.unroute(name)
        if served is not None:
            served[0].stop()
            shutil.rmtree(served[1], ignore_errors=True)

    def close(self) -> None:
        """Stop every server and the data plane."""
        for name in self.endpoints():
            self.stop(name)
        self.dataplane.stop()
