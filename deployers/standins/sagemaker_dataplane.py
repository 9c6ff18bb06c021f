"""The local SageMaker runtime data plane: nginx in front of real MLflow scoring servers.

In AWS, ``sagemaker-runtime`` ``InvokeEndpoint`` reaches the mlflow-pyfunc container, where nginx
proxies ``/invocations`` to MLflow's scoring server. Here one nginx (Debian ``nginx-light``,
``apt-get install -y nginx-light``) listens on 127.0.0.1 at a port chosen at run time and maps
``POST /endpoints/<name>/invocations`` onto the ``/invocations`` of the ``mlflow models serve``
process of each instance of that endpoint. Pointing the runtime client's ``endpoint_url`` (or
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) at ``DataPlane.url`` makes boto3 ``invoke_endpoint`` do
real inference, unchanged.

Promises:

- nginx runs in the foreground (``daemon off``) as a child started in its own session, from a
  private temporary prefix holding its config, pid file, logs and temp paths; ``stop`` ends it
  and removes the prefix. ``LocalSageMaker`` owns one per process.
- ``route``/``unroute`` rewrite the config, check it with ``nginx -t``, reload it, and return
  only once the change answers (so a blue/green swap never drops to 404). An endpoint routed to
  several servers (one per instance) gets them round robin, as SageMaker spreads requests over
  a variant's instances.
- An unknown endpoint answers 400 ``ValidationError`` like SageMaker, so botocore raises a
  ``ClientError`` with that code.
- ``/endpoints/<name>/invocations`` is a front door (``deployers.frontdoor``): only JSON
  ``POST`` passes (405, 415 otherwise), bodies over 6 MB get 413 (SageMaker's payload limit),
  more than ``limits.max_connections`` requests in flight to one endpoint get 429, a server's
  5xx is replaced by a short JSON body, every error of nginx's own is short JSON, and the
  workers never run as root.
- ``ScoringServer.start`` returns only when ``/ping`` answers; a server that dies first raises
  ``DeployerError`` with the tail of its log. Given a cgroup (``shaping.Group``), the server
  joins it before it runs (``Group.launch_argv``), so it and every uvicorn worker it forks are
  shaped; the caller owns the group and removes it after ``stop``.

Processes are started and ended with the local deployer's helpers (``deployers.procs``,
``deployers.http``, ``deployers.balancer``): own session, recorded, whole group ended.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deployers import balancer, procs
from deployers import frontdoor as door
from deployers.base import DeployerError
from deployers.http import free_port, probe, wait_for_ping
from deployers.standins.shaping import Group

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# SageMaker's invocation timeout: the longest a model server may take to answer.
INVOCATION_TIMEOUT_S = 60.0


@dataclass
class ScoringServer:
    """One ``mlflow models serve --env-manager local`` process group on 127.0.0.1."""

    model_path: str
    port: int
    record: procs.ProcessRecord
    group: Group | None = None  # the cgroup it runs in (owned by the caller); None: unshaped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, model_path: str, log: Path, workers: int | None = None,
        env: dict[str, str] | None = None, timeout_s: float = 120.0, group: Group | None = None,
        endpoint: str | None = None,
    ) -> ScoringServer:
        """Serve ``model_path`` (inside ``group`` when given; marked as a server of ``endpoint``)
        and wait for ``/ping``; raise with the log tail on failure, after ending what was
        started."""
        port = free_port()
        argv = procs.scoring_server_argv(model_path, port, workers)
        if group is not None:
            argv = group.launch_argv(argv)
        full_env = procs.scoring_server_env({**os.environ, **(env or {})})
        record, proc = procs.spawn(argv, full_env, log, role="sagemaker-server",
                                   deployment=endpoint, workdir=log.parent)
        server = cls(model_path, port, record, group)
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
    routes: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    record: procs.ProcessRecord | None = None
    limits: door.Limits = field(default_factory=door.Limits)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def url(self) -> str:
        """The endpoint URL for the ``sagemaker-runtime`` client."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        p = self.prefix
        upstreams, locations = [], []
        for i, (name, (ports, variant)) in enumerate(sorted(self.routes.items())):
            servers = " ".join(f"server 127.0.0.1:{port};" for port in ports)
            upstreams.append(f"    upstream ep{i} {{ {servers} keepalive 32; }}\n")
            locations.append(door.invocations_location(
                f"/endpoints/{name}/invocations", f"http://ep{i}/invocations",
                INVOCATION_TIMEOUT_S,
                f"            add_header X-Amzn-Invoked-Production-Variant {variant} always;\n"))
            locations.append(door.health_location(f"/endpoints/{name}/ping",
                                                  f"http://ep{i}/ping"))
        return (
            "# generated by deployers/standins/sagemaker_dataplane.py\n"
            + door.main_rules(p, self.limits)
            + "http {\n    access_log off;\n"
            # the connection limit counts per endpoint
            '    map $uri $niser_endpoint { "~^/endpoints/([^/]+)/" $1; default $uri; }\n'
            + door.http_rules(p, self.limits, "$niser_endpoint")
            + "".join(upstreams)
            + "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            + door.server_rules(self.limits)
            + "        location = /ping { default_type text/plain; return 200 'ok'; }\n"
            + "".join(locations)
            # SageMaker's answer for an endpoint it does not know; botocore raises ClientError.
            + "        location ~ ^/endpoints/([^/]+)/ {\n"
            "            add_header x-amzn-ErrorType ValidationError always;\n"
            '            return 400 \'{"__type": "ValidationError", '
            '"message": "Endpoint $1 not found."}\';\n'
            "        }\n"
            "    }\n"
            "}\n"
        )

    def _write(self) -> Path:
        door.prepare_prefix(self.prefix)
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
                self.record, proc = balancer.start(self._write(), self.prefix, dict(os.environ),
                                                       "sagemaker-dataplane")
                try:
                    wait_for_ping(self.url, timeout_s, proc, self.prefix / "error.log")
                    return
                except DeployerError as exc:
                    last = str(exc)
                    procs.end(self.record)
                    self.record = None
            raise DeployerError(f"the local SageMaker data plane (nginx) did not start: {last}")

    def _reload_until(self, name: str, expect: int, timeout_s: float = 15.0) -> None:
        """Reload the config; return once the old workers are gone and ``name`` answers
        ``expect`` (until then an old worker may still take a new connection)."""
        assert self.record is not None
        try:
            balancer.reload(self.record, self._write(), self.prefix, lambda: probe(
                f"{self.url}/endpoints/{name}/ping")[0] == expect, timeout_s)
        except DeployerError as exc:
            raise DeployerError(f"the route of {name!r}: {exc}") from None

    def route(self, name: str, port: int | Sequence[int], variant: str = "AllTraffic") -> None:
        """Send ``/endpoints/<name>/invocations`` to the scoring server on ``port`` (several
        ports: round robin over them)."""
        if not NAME.match(name):
            raise ValueError(f"endpoint name {name!r} is not a valid SageMaker endpoint name")
        ports = (port,) if isinstance(port, int) else tuple(port)
        if not ports:
            raise ValueError(f"endpoint {name!r}: route it to at least one server port")
        with self._lock:
            self.start()
            self.routes[name] = (ports, variant)
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
