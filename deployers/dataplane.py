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
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deployers.base import DeployerError

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# SageMaker real-time endpoints accept payloads up to 6 MB.
MAX_BODY = "6m"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the process group of ``proc`` (started with ``start_new_session``) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    else:  # the leader is gone; make sure nothing it started lingers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class ScoringServer:
    """One ``mlflow models serve --env-manager local`` process on 127.0.0.1."""

    model_path: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

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
        cmd = [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", model_path,
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
        ]
        if workers:
            cmd += ["-w", str(workers)]
        full_env = {**os.environ, **(env or {})}
        # `mlflow models serve` execs uvicorn from the interpreter's bin directory.
        full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
        server = cls(model_path, port, proc, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _end(proc)
                raise DeployerError(
                    f"mlflow models serve for {model_path} exited with code {proc.returncode} "
                    f"before answering /ping; last lines of {log}:\n{_tail(log)}"
                )
            if _get(f"{server.url}/ping") == 200:
                return server
            time.sleep(0.25)
        server.stop()
        raise DeployerError(
            f"mlflow models serve for {model_path} did not answer /ping within {timeout_s:.0f} s; "
            f"last lines of {log}:\n{_tail(log)}"
        )

    def stop(self) -> None:
        """End the server and every worker it started."""
        _end(self.proc)


@dataclass
class DataPlane:
    """One nginx mapping ``/endpoints/<name>/invocations`` onto scoring servers."""

    nginx: str = "nginx"
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="niser-dataplane-")))
    port: int = 0
    routes: dict[str, tuple[int, str]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The endpoint URL for the ``sagemaker-runtime`` client."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        p = self.prefix
        user = ""
        if os.geteuid() == 0:  # workers would otherwise drop to `nobody` and lose the temp dirs
            user = f"user {pwd.getpwuid(0).pw_name};\n"
        upstreams, locations = [], []
        for i, (name, (port, variant)) in enumerate(sorted(self.routes.items())):
            upstreams.append(
                f"  upstream ep{i} {{ server 127.0.0.1:{port}; keepalive 32; }}\n"
            )
            locations.append(
                f"    location = /endpoints/{name}/invocations {{\n"
                f"      proxy_pass http://ep{i}/invocations;\n"
                f"      add_header X-Amzn-Invoked-Production-Variant {variant} always;\n"
                f"    }}\n"
                f"    location = /endpoints/{name}/ping {{ proxy_pass http://ep{i}/ping; }}\n"
            )
        return (
            f"{user}worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\n"
            f"error_log {p}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"  access_log off;\n"
            f"  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n"
            f"  fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n"
            f"  scgi_temp_path {p}/tmp/scgi;\n"
            + "".join(upstreams)
            + "  server {\n"
            f"    listen 127.0.0.1:{self.port};\n"
            f"    client_max_body_size {MAX_BODY};\n"
            "    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n'
            "    proxy_read_timeout 60s;\n"
            "    location = /dataplane/ping { return 200 'ok'; }\n"
            + "".join(locations)
            + "    location ~ ^/endpoints/([^/]+)/ {\n"
            "      default_type application/json;\n"
            "      add_header x-amzn-ErrorType ValidationError always;\n"
            '      return 400 \'{"__type": "ValidationError", '
            '"message": "Endpoint $1 not found."}\';\n'
            "    }\n"
            "  }\n"
            "}\n"
        )

    def _write_and_check(self) -> Path:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self._config())
        check = subprocess.run(
            [self.nginx, "-t", "-q", "-p", str(self.prefix), "-c", str(conf),
             "-e", str(self.prefix / "error.log")],
            capture_output=True, text=True,
        )
        if check.returncode != 0:
            raise DeployerError(f"nginx refused its generated config {conf}:\n{check.stderr}")
        return conf

    def start(self, timeout_s: float = 15.0) -> None:
        """Start nginx at a free port; idempotent."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            if shutil.which(self.nginx) is None:
                raise DeployerError(
                    f"{self.nginx!r} not found: the local SageMaker data plane needs nginx; "
                    "install it with `apt-get install -y nginx-light`"
                )
            for _attempt in range(3):  # another process may take the port between probe and bind
                self.port = free_port()
                conf = self._write_and_check()
                log = self.prefix / "nginx.out"
                with open(log, "wb") as out:
                    self.proc = subprocess.Popen(
                        [self.nginx, "-p", str(self.prefix), "-c", str(conf),
                         "-e", str(self.prefix / "error.log")],
                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and self.proc.poll() is None:
                    if _get(f"{self.url}/dataplane/ping") == 200:
                        return
                    time.sleep(0.05)
                _end(self.proc)
            raise DeployerError(
                f"nginx did not start on 127.0.0.1:{self.port}; last lines of its error log:\n"
                f"{_tail(self.prefix / 'error.log')}"
            )

    def _reload_until(self, name: str, expect: int, timeout_s: float = 15.0) -> None:
        self._write_and_check()
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _get(f"{self.url}/endpoints/{name}/ping") == expect:
                return
            time.sleep(0.05)
        raise DeployerError(
            f"nginx did not apply the route of {name!r} within {timeout_s:.0f} s; last lines of "
            f"its error log:\n{_tail(self.prefix / 'error.log')}"
        )

    def route(self, name: str, port: int, variant: str = "AllTraffic") -> None:
        """Send ``/endpoints/<name>/invocations`` to the scoring server on ``port``."""
        if not NAME.match(name):
            raise ValueError(f"endpoint name {name!r} is not a valid SageMaker endpoint name")
        self.start()
        with self._lock:
            self.routes[name] = (port, variant)
            self._reload_until(name, 200)

    def unroute(self, name: str) -> None:
        """Forget ``name``; absent is not an error. Stops nginx when no route is left."""
        with self._lock:
            if self.routes.pop(name, None) is None or self.proc is None:
                return
            if self.routes:
                self._reload_until(name, 400)
                return
        self.stop()

    def stop(self) -> None:
        """End nginx and remove its prefix; idempotent."""
        with self._lock:
            if self.proc is not None:
                _end(self.proc, signal.SIGQUIT)
                self.proc = None
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
