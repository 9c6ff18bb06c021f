"""Running the session server, and its command line ``niser-mlops session-server``.

    niser-mlops session-server --deployer local --deployment niser-local-1
    niser-mlops session-server --deployer lambda --deployment niser-fn --store redis://127.0.0.1:6379/0

Binds 127.0.0.1 by default, on a free port unless ``--port`` names one; ``--port-file`` receives
the bound port once the socket is listening (written to a temporary name, then renamed), for
scripts that start it in the background. The deployment must exist: the deployer's ``describe``
is asked first, so a wrong name fails at once, naming the known ones. Stops on SIGINT/SIGTERM,
closing the store. Sessions default to ``.state/sessions.db`` (SQLite) in the current directory.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click
import uvicorn

from deployers.base import DeployerError
from deployers.registry import available, get_deployer
from sessions.app import create_app
from sessions.store import DEFAULT_MAX_CLICKS, DEFAULT_TTL_S, open_store

DEFAULT_STORE = "sqlite:///.state/sessions.db"
# uvicorn's fast path, named rather than left to "auto": the C parser (httptools) and libuv's loop
# (uvloop) take 0.3-0.5 ms off every click here against h11 on asyncio (scripts/
# bench_session_overhead.py; BENCHMARKS.md), and the session manager's own time is what a shop
# adds to every recommendation. The scoring servers keep MLflow's stack (deployers.procs).
HTTP_PARSERS = ("httptools", "h11")  # the first is the default; h11 is pure Python
EVENT_LOOPS = ("uvloop", "asyncio")  # asyncio: the standard library's
HTTP_PARSER, EVENT_LOOP = HTTP_PARSERS[0], EVENT_LOOPS[0]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port the OS picks).

    Made with ``IPPROTO_TCP`` named: asyncio turns Nagle off (``TCP_NODELAY``) only on sockets
    whose protocol says TCP, and with Nagle on every answer waits ~40 ms for a delayed ACK
    between its header and body writes (measured: 44 ms for ``GET /health``, 0.7 ms without)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


def write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def serve(deployer: str, deployment: str, *, host: str = "127.0.0.1", port: int = 0,
          store_url: str = DEFAULT_STORE, ttl_s: float = DEFAULT_TTL_S,
          max_clicks: int = DEFAULT_MAX_CLICKS, endpoint_timeout_s: float = 10.0,
          port_file: Path | None = None, announce: bool = True, http: str = HTTP_PARSER,
          loop: str = EVENT_LOOP) -> None:
    """Serve sessions in front of ``deployer``/``deployment`` until SIGINT/SIGTERM."""
    target = get_deployer(deployer)
    target.describe(deployment)  # an unknown deployment fails here, naming the known ones
    invoker = target.invoker(deployment)
    store = open_store(store_url, ttl_s=ttl_s, max_clicks=max_clicks)
    close = getattr(invoker, "close", None)
    app = create_app(invoker, store, deployer=deployer, deployment=deployment,
                     endpoint_timeout_s=endpoint_timeout_s,
                     on_shutdown=close if callable(close) else None)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    if port_file is not None:
        write_port(port_file, bound)
    if announce:
        click.echo(f"session server for {deployer}/{deployment} on http://{host}:{bound} "
                   f"(sessions: {store.label}, expire after {ttl_s:g} s, last {max_clicks} "
                   "clicks kept)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            http=http, loop=loop)
    uvicorn.Server(config).run(sockets=[sock])


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise click.BadParameter(f"must be a positive number, got {value}")
    return value


@click.command("session-server")
@click.option("--deployer", required=True, help=f"The deployment's deployer ({', '.join(available())}).")
@click.option("--deployment", required=True, help="The deployment's name, as its deployer lists it.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port.")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the bound port here once listening.")
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True,
              help="sqlite:///PATH or redis://HOST:PORT/DB.")
@click.option("--ttl-minutes", type=float, default=DEFAULT_TTL_S / 60, show_default=True,
              callback=_positive, help="A session expires this long after its last click.")
@click.option("--max-clicks", type=click.IntRange(1, 1000), default=DEFAULT_MAX_CLICKS,
              show_default=True, help="Clicks kept per session (the newest), and sent to the model.")
@click.option("--endpoint-timeout-s", type=float, default=10.0, show_default=True,
              callback=_positive, help="Answer 504 when the deployment takes longer.")
@click.option("--http", type=click.Choice(HTTP_PARSERS), default=HTTP_PARSER,
              show_default=True, help="uvicorn's HTTP parser (h11: pure Python, slower).")
@click.option("--loop", type=click.Choice(EVENT_LOOPS), default=EVENT_LOOP,
              show_default=True, help="uvicorn's event loop (asyncio: the standard library's).")
def session_server(deployer: str, deployment: str, host: str, port: int, port_file: Path | None,
                   store_url: str, ttl_minutes: float, max_clicks: int,
                   endpoint_timeout_s: float, http: str, loop: str) -> None:
    """Serve the session manager in front of a deployment (see sessions.app for the API)."""
    if deployer not in available():
        raise click.BadParameter(f"{deployer!r} is not a deployer; known: {', '.join(available())}",
                                 param_hint="--deployer")
    try:
        serve(deployer, deployment, host=host, port=port, store_url=store_url,
              ttl_s=ttl_minutes * 60, max_clicks=max_clicks,
              endpoint_timeout_s=endpoint_timeout_s, port_file=port_file, http=http, loop=loop)
    except (DeployerError, KeyError) as exc:  # describe: KeyError for an unknown deployment
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise click.BadParameter(str(message), param_hint="--deployment") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from None
