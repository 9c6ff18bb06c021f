"""The front door of a local deployment: one nginx (``deployers.balancer``, with the rules of
``deployers.frontdoor``) in front of its servers, however many there are.

Promises:

- ``start`` records nginx in the deployment's state (``state["balancer"]``) and pushes its end on
  ``undo`` as soon as it runs, and returns its URL once it answers ``/ping`` (through a server).
- ``switch`` points the running door at other servers without dropping a request: it rewrites
  the upstreams, reloads nginx, and returns once the old workers have exited (each finishes the
  requests it holds) and ``/ping`` is answered by one of the new servers (``X-Upstream``).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deployers import balancer as lb
from deployers import frontdoor, procs
from deployers.base import DeployerError, Undo
from deployers.http import free_port, probe, wait_for_ping
from deployers.local.settings import LocalSettings


def limits(s: LocalSettings) -> frontdoor.Limits:
    """The door's limits for settings ``s``."""
    return frontdoor.Limits(max_connections=s.max_connections)


def _prefix(state: dict[str, Any]) -> Path:
    front = state.get("balancer") or {}
    return Path(front.get("prefix") or Path(state["workdir"]) / "nginx")


def _config(state: dict[str, Any], port: int, servers: Sequence[dict[str, Any]],
            s: LocalSettings) -> Path:
    return lb.write_config(_prefix(state), port, [sv["port"] for sv in servers], s.balancer,
                           s.request_timeout_s, limits(s), passage=[Path(state["workdir"])])


def start(state: dict[str, Any], s: LocalSettings, undo: Undo, save: Callable[[], None],
          deadline: float) -> str:
    """Start the door in front of ``state["servers"]``; see the module docstring."""
    prefix = _prefix(state)
    prefix.mkdir(exist_ok=True)
    port = free_port()
    config = _config(state, port, state["servers"], s)
    record, proc = lb.start(config, prefix, dict(os.environ), "local-balancer", state["name"])
    undo.push("front door", functools.partial(procs.end, record))
    url = f"http://127.0.0.1:{port}"
    state["balancer"] = {"url": url, "port": port, "policy": s.balancer, "prefix": str(prefix),
                         "access_log": str(prefix / "access.log"), "process": record.as_json()}
    save()
    wait_for_ping(url, max(deadline - time.monotonic(), 5.0), proc, prefix / "error.log")
    if not procs.listens_on(record, port):
        raise DeployerError(f"the front door's port {port} was taken by another program after"
                            " it was chosen; deploy again")
    return url


def served_by(url: str, timeout_s: float = 2.0) -> str | None:
    """``X-Upstream`` of a 200 answer to ``GET <url>/ping`` (``None``: no such answer)."""
    status, headers = probe(url.rstrip("/") + "/ping", timeout_s)
    return headers.get("X-Upstream") if status == 200 else None


def switch(state: dict[str, Any], servers: Sequence[dict[str, Any]], s: LocalSettings,
           timeout_s: float = 30.0) -> None:
    """Point the running door of ``state`` at ``servers``; see the module docstring."""
    front = state["balancer"]
    config = _config(state, int(front["port"]), servers, s)
    want = {f"127.0.0.1:{sv['port']}" for sv in servers}
    lb.reload(procs.ProcessRecord.from_json(front["process"]), config, _prefix(state),
              lambda: served_by(str(front["url"])) in want, timeout_s)
    front["policy"] = s.balancer
