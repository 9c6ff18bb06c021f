"""The local SageMaker runtime data plane: nginx in front of real MLflow scoring servers.

In AWS, ``sagemaker-runtime`` ``InvokeEndpoint`` reaches the mlflow-pyfunc container, where nginx
proxies ``/invocations`` to MLflow's scoring server. Here one nginx (Debian ``nginx-light``,
``apt-get install -y nginx-light``) listens on 127.0.0.1 at a port chosen at run time and maps
``POST /endpoints/<name>/invocations`` onto the ``/invocations`` of the ``mlflow models serve``
process of that endpoint. Pointing the runtime client's ``endpoint_url`` (or
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) at ``DataPlane.url`` makes boto3 ``invoke_endpoint`` do
real inference, unchanged.

Promises:

- nginx runs in the foreground (``daemon off``) as a child started in its own session, from a
  private temporary prefix holding its config, pid file, logs and temp paths; ``stop`` ends it
  and removes the prefix. ``shared()`` is one data plane per process, stopped at exit.
- ``route``/``unroute`` rewrite the config, check it with ``nginx -t``, reload it, and return
  only once the change answers (so a blue/green swap never drops to 404).
- An unknown endpoint answers 400 ``ValidationError`` like SageMaker, so botocore raises a
  ``ClientError`` with that code.
- ``ScoringServer.start`` returns only when ``/ping`` answers; a server that dies first raises
  ``DeployerError`` with the tail of its log.

Processes are started and ended with the local deployer's helpers (``deployers.procs``,
``deployers.http``, ``deployers.balancer``): own session, recorded, whole group ended.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deployers import balancer, procs
from deployers.base import DeployerError
from deployers.http import free_port, tail, wait_for_ping

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# SageMaker real-time endpoints accept payloads up to 6 MB.
MAX_BODY = "6m"


def _status(url: str, timeout: float = 2.0) -> int:
    """HTTP status of ``GET url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


@dataclass
class ScoringServer:
    """One ``mlflow models serve --env-manager local`` process group on 127.0.0.1."""

    model_path: str
    port: int
    record: procs.ProcessRecord

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, model_path: str, log: Path, workers: int | None = None,
        env: dict[str, str] | None = None, timeout_s: float = 120.0,
    ) -> ScoringServer:
        """Serve ``model_path`` and wait for ``/ping``; raise with the log tail on failure."""
        port = free_port()
        argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_path,
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        if workers:
            argv += ["-w", str(workers)]
        full_env = {**os.environ, **(env or {})}
        # `mlflow models serve` execs uvicorn from the interpreter's bin directory.
        full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
        record, proc = procs.spawn(argv, full_env, log)
        server = cls(model_path, port, record)
        try:
            wait_for_ping(server.url, timeout_s, proc, log)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """End the server and every worker it started; idempotent."""
        procs.end(self.record)


@dataclass
class DataPlane:
    """One nginx mapping ``/endpoints/<name>/invocations`` onto scoring servers."""

    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="niser-dataplane-")))
    port: int = 0
    routes: dict[str, tuple[int, str]] = field(default_factory=dict)
    record: procs.ProcessRecord | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def url(self) -> str:
        """The endpoint URL for the ``sagemaker-runtime`` client."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        p = self.prefix
        user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
        upstreams, locations = [], []
        for i, (name, (port, variant)) in enumerate(sorted(self.routes.items())):
            upstreams.append(f"  upstream ep{i} {{ server 127.0.0.1:{port}; keepalive 32; }}\n")
            locations.append(
                f"    location = /endpoints/{name}/invocations {{\n"
                f"      proxy_pass http://ep{i}/invocations;\n"
                f"      add_header X-Amzn-Invoked-Production-Variant {variant} always;\n"
                f"    }}\n"
                f"    location = /endpoints/{name}/ping {{ proxy_pass http://ep{i}/ping; }}\n")
        return (
            f"# generated by deployers/dataplane.py\n{user}worker_processes 1;\ndaemon off;\n"
            f"pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n"
            f"  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n"
            f"  fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n"
            f"  scgi_temp_path {p}/tmp/scgi;\n"
            + "".join(upstreams)
            + "  server {\n"
            f"    listen 127.0.0.1:{self.port};\n"
            f"    client_max_body_size {MAX_BODY};\n"
            "    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n'
            "    proxy_read_timeout 60s;\n"  # SageMaker's invocation timeout
            "    location = /ping { return 200 'ok'; }\n"
            + "".join(locations)
            # SageMaker's answer for an endpoint it does not know; botocore raises ClientError.
            + "    location ~ ^/endpoints/([^/]+)/ {\n"
            "      default_type application/json;\n"
            "      add_header x-amzn-ErrorType ValidationError always;\n"
            '      return 400 \'{"__type": "ValidationError", '
            '"message": "Endpoint $1 not found."}\';\n'
            "    }\n"
            "  }\n"
            "}\n"
        )

    def _write(self) -> Path:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self._config())
        balancer.check(conf, self.prefix)
        return conf

    def start(self, timeout_s: float = 15.0) -> None:
        """Start nginx at a free port; idempotent."""
        with self._lock:
            if self.record is not None and procs.alive(self.record):
                return
            last = ""
            for _attempt in range(3):  # another process may take the port between probe and bind
                self.port = free_port()
                self.record, proc = balancer.start(self._write(), self.prefix, dict(os.environ))
                try:
                    wait_for_ping(self.url, timeout_s, proc, self.prefix / "error.log")
                    return
                except DeployerError as exc:
                    last = str(exc)
                    procs.end(self.record)
                    self.record = None
            raise DeployerError(f"the local SageMaker data plane (nginx) did not start: {last}")

    def _workers(self) -> set[int]:
        assert self.record is not None
        try:
            return {p.pid for p in psutil.Process(self.record.pid).children()}
        except psutil.Error:
            return set()

    def _reload_until(self, name: str, expect: int, timeout_s: float = 15.0) -> None:
        """Reload the config; return once the old workers are gone and ``name`` answers
        ``expect`` (until then an old worker may still take a new connection)."""
        self._write()
        assert self.record is not None
        old = self._workers()
        os.kill(self.record.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not old & self._workers() and _status(
                    f"{self.url}/endpoints/{name}/ping") == expect:
                return
            time.sleep(0.05)
        raise DeployerError(
            f"nginx did not apply the route of {name!r} within {timeout_s:.0f} s; last lines of "
            f"its error log:\n{tail(self.prefix / 'error.log')}")

    def route(self, name: str, port: int, variant: str = "AllTraffic") -> None:
        """Send ``/endpoints/<name>/invocations`` to the scoring server on ``port``."""
        if not NAME.match(name):
            raise ValueError(f"endpoint name {name!r} is not a valid SageMaker endpoint name")
        with self._lock:
            self.start()
            self.routes[name] = (port, variant)
            self._reload_until(name, 200)

    def unroute(self, name: str) -> None:
        """Forget ``name``; absent is not an error. Stops nginx when no route is left."""
        with self._lock:
            if self.routes.pop(name, None) is None or self.record is None:
                return
            if self.routes:
                self._reload_until(name, 400)
            else:
                self.stop()

    def stop(self) -> None:
        """End nginx and remove its prefix; idempotent."""
        with self._lock:
            if self.record is not None:
                procs.end(self.record)
                self.record = None
            self.routes.clear()
            shutil.rmtree(self.prefix, ignore_errors=True)


_shared: DataPlane | None = None
_shared_lock = threading.Lock()


def shared() -> DataPlane:
    """The process-wide data plane (created on first use, stopped at interpreter exit)."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.prefix.exists():
            _shared = DataPlane(prefix=Path(tempfile.mkdtemp(prefix="niser-dataplane-")))
            atexit.register(_shared.stop)
        return _shared
