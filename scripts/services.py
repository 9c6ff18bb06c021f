"""Start, check and stop the project's local services: MLflow server, Prefect server, flow runner.

    python scripts/services.py start     # prints the env file to source
    python scripts/services.py start --workers 2   # and a process work pool with 2 workers
    python scripts/services.py status
    python scripts/services.py stop      # stops only the processes this script started

Everything lives under ``.state/`` in the repository (SQLite databases, artifacts, logs, PIDs):
MLflow on SQLite with ``--workers 1``, Prefect on SQLite, both on 127.0.0.1 and ports chosen at
start. The Prefect server is given its UI's API URL (``PREFECT_UI_API_URL``: otherwise its UI
would talk to port 4200), and start checks ``GET /ui-settings`` answers that URL.
``.state/env.sh`` exports ``MLFLOW_TRACKING_URI`` and ``PREFECT_API_URL`` for them. When
either variable is already set, that server is used and not started; with ``NISER_AWS=real`` no
moto server is started and boto3 reaches AWS with your own credentials.

``start --backend postgres`` (or ``NISER_BACKEND=postgres``) keeps the runs in a PostgreSQL cluster
under ``.state/postgres`` and the artifacts in S3 (the moto server's bucket, or with
``NISER_AWS=real`` the one ``NISER_ARTIFACT_BUCKET`` names): see ``scripts/postgres_backend.py``.

``--workers N`` creates the Prefect process work pool ``--pool`` (default ``niser-hpo``) when
absent and starts N ``prefect worker start --pool`` processes, one flow run at a time each
(``hpo`` shards studies over them: ``--param work_pool=niser-hpo``); ``.state/env.sh`` then
exports ``NISER_HPO_POOL``. With ``--backend postgres`` it also exports ``NISER_OPTUNA_STORAGE``
(the cluster's ``optuna`` database, the study the shards share) and ``PGPASSFILE`` (the path of
the cluster's passfile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from bench.leftovers_cli import leftover_line
from deployers.http import free_port

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("NISER_STATE_DIR", ROOT / ".state"))
PIDS = STATE / "services.json"
ENV_FILE = STATE / "env.sh"
BIN = Path(sys.executable).parent
DEFAULT_POOL = "niser-hpo"


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PREFECT_HOME", str(STATE / "prefect"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # MLflow prints a GenAI-view link for every run it ends; the flow prints classic-view ones
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    return env


def _spawn(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)


def _wait(name: str, url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (STATE / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name} exited with {proc.returncode} at start-up; log tail:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{name} did not answer {url} within {timeout:.0f} s; see {STATE / name}.log")


def ui_api_url(api_url: str) -> str | None:
    """The API URL the Prefect UI served beside ``api_url`` talks to (``GET /ui-settings``), or
    None when no UI answers there."""
    try:
        with urllib.request.urlopen(f"{api_url.removesuffix('/api')}/ui-settings",
                                    timeout=5) as r:
            return str(json.load(r).get("api_url") or "") or None
    except (OSError, ValueError):
        return None


def check_ui_settings(api_url: str) -> None:
    """``SystemExit`` unless the Prefect UI beside ``api_url`` talks to ``api_url`` itself (a UI
    pointed elsewhere shows another server's runs, or "Can't connect to Server API")."""
    seen = ui_api_url(api_url)
    if seen is not None and seen.rstrip("/") != api_url.rstrip("/"):
        raise SystemExit(f"the Prefect UI at {api_url.removesuffix('/api')} talks to {seen}, "
                         f"not {api_url}; start the server with PREFECT_UI_API_URL={api_url}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status < 500)
    except OSError:
        return False


def _load() -> dict[str, dict[str, object]]:
    return json.loads(PIDS.read_text()) if PIDS.exists() else {}


BACKENDS = ("sqlite", "postgres")


def _start_moto(env: dict[str, str], services: dict[str, dict[str, object]]) -> None:
    """Start a moto server (the AWS control plane) and point ``env`` at it."""
    # No AWS account: a moto server is the AWS control plane; inference still runs on
    # real scoring servers through the SageMaker and Lambda runtime APIs.
    if not (BIN / "moto_server").exists():
        raise SystemExit("moto_server is not installed: `pip install -e '.[standins]'` "
                         "(scripts/setup.sh does), or set NISER_AWS=real")
    aport = free_port()
    moto = _spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(aport)], env)
    services["moto"] = {"pid": moto.pid, "started": _started(moto.pid), "url": f"http://127.0.0.1:{aport}"}
    _save(services)
    _wait("moto", f"http://127.0.0.1:{aport}/moto-api/", moto, 60)
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{aport}", AWS_DEFAULT_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="moto-local", AWS_SECRET_ACCESS_KEY="moto-local")


def _start_postgres(env: dict[str, str], services: dict[str, dict[str, object]],
                    upgrade_db: bool) -> tuple[str, str, dict[str, str]]:
    """The PostgreSQL cluster and the S3 bucket of ``--backend postgres``: (store URI, artifacts
    destination, the MLflow server's environment). The moto server, when used, runs already."""
    import postgres_backend as pg

    destination = pg.artifacts_destination(os.environ.get("NISER_AWS", "moto"))
    mlflow_env = dict(env)
    if "moto" in services:
        pg.create_bucket(destination, env["AWS_ENDPOINT_URL"])
        mlflow_env["MLFLOW_S3_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"]
    info = pg.start(STATE, free_port())
    services["postgres"] = info
    _save(services)
    pg.check_schema(info, BIN / "mlflow", upgrade_db)
    # hpo's shards share their study there; workers and the runner find the passfile by path
    env.update(NISER_OPTUNA_STORAGE=pg.optuna_url(info), **pg.mlflow_env(info))
    return str(info["url"]), destination, {**mlflow_env, **pg.mlflow_env(info)}


def start(with_runner: bool = True, backend: str = "sqlite", upgrade_db: bool = False,
          workers: int = 0, pool: str = DEFAULT_POOL) -> None:
    if backend not in BACKENDS:
        raise SystemExit(f"--backend / NISER_BACKEND={backend!r}: expected one of {BACKENDS}")
    if backend == "postgres" and os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit("--backend postgres starts a tracking server of its own: unset "
                         f"MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']} to use it")
    STATE.mkdir(parents=True, exist_ok=True)
    running = {k: v for k, v in _load().items() if _ours(v) or (
        k == "postgres" and psutil.pid_exists(int(v["pid"])))}  # type: ignore[call-overload]
    if running:
        raise SystemExit(f"services already running: {sorted(running)}; "
                         f"run `python scripts/services.py stop` first")
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        given = os.environ.get(var, "")
        if given.startswith("http") and not _answers(f"{given.rstrip('/')}/health"):
            raise SystemExit(f"{var}={given} does not answer; start that server, or unset {var} "
                             "to get a local one")
    env = base_env()
    services: dict[str, dict[str, object]] = {}
    starting: list[tuple[str, str, subprocess.Popen[bytes], float]] = []  # both start at once
    try:
        # An MLFLOW_TRACKING_URI or PREFECT_API_URL already set means: use that server.
        mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not mlflow_uri:
            store, artifacts, mlflow_env = (f"sqlite:///{STATE / 'mlflow.db'}",
                                            str(STATE / "mlartifacts"), env)
            if backend == "postgres":
                if os.environ.get("NISER_AWS", "moto") == "moto":
                    _start_moto(env, services)  # the artifact store: up before MLflow
                store, artifacts, mlflow_env = _start_postgres(env, services, upgrade_db)
            mport = free_port()
            mlflow_uri = f"http://127.0.0.1:{mport}"
            mlflow = _spawn("mlflow", [
                str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mport),
                "--workers", "1", "--backend-store-uri", store,
                "--artifacts-destination", artifacts,
            ], mlflow_env)
            services["mlflow"] = {"pid": mlflow.pid, "started": _started(mlflow.pid), "url": mlflow_uri}
            _save(services)
            starting.append(("mlflow", f"{mlflow_uri}/health", mlflow, 120))
        prefect_url = os.environ.get("PREFECT_API_URL", "")
        if not prefect_url:
            pport = free_port()
            prefect_url = f"http://127.0.0.1:{pport}/api"
            # The UI builds its API URL from PREFECT_SERVER_API_PORT (default 4200), not from
            # --port: without its own URL it would talk to whatever answers on 4200.
            prefect = _spawn("prefect", [
                str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                str(pport)], {**env, "PREFECT_UI_API_URL": prefect_url,
                              "PREFECT_SERVER_API_PORT": str(pport)})
            services["prefect"] = {"pid": prefect.pid, "started": _started(prefect.pid), "url": prefect_url}
            _save(services)
            starting.append(("prefect", f"{prefect_url}/health", prefect, 180))
        for name, url, proc, timeout in starting:
            _wait(name, url, proc, timeout)
        if "prefect" in services:
            check_ui_settings(prefect_url)
        env.update(MLFLOW_TRACKING_URI=mlflow_uri, PREFECT_API_URL=prefect_url)
        if os.environ.get("NISER_AWS", "moto") == "moto" and "moto" not in services:
            _start_moto(env, services)
        if workers:
            env["NISER_HPO_POOL"] = pool
        _write_env(env)
        if workers:
            start_workers(env, workers, pool, services)
        if with_runner:
            runner = _spawn("runner", [sys.executable, "-m", "flows.serve"], env)
            services["runner"] = {"pid": runner.pid, "started": _started(runner.pid)}
            _save(services)
            _wait_runner(runner, env)
    except BaseException:
        stop()
        raise
    print(f"MLflow UI:  {mlflow_uri}/#/experiments?workflowType=machine_learning\n"
          f"Prefect UI: {prefect_url.removesuffix('/api')}\n"
          f"env file:   {ENV_FILE}  (source it to use these servers)")
    # a fresh moto server holds nothing yet: only a real account (and this machine) can hold
    # what an earlier, killed run left
    line = leftover_line(aws=os.environ.get("NISER_AWS", "moto") != "moto")
    if line:
        print(line)


def _wait_runner(proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
    """Wait until the flow runner has registered its deployments with the Prefect server."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (STATE / "runner.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"flow runner exited with {proc.returncode}; log tail:\n{tail}")
        out = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env,
                             capture_output=True, text=True, timeout=120)
        if "train-and-benchmark/local" in out.stdout and "hpo/local" in out.stdout:
            return
        time.sleep(2)
    raise SystemExit(f"deployments not registered within 240 s; see {STATE / 'runner.log'}")


def start_workers(env: dict[str, str], n: int, pool: str,
                  services: dict[str, dict[str, object]]) -> None:
    """Create the process work pool ``pool`` when absent, start ``n`` workers on it (recorded in
    ``services`` as ``worker-1``...) and wait until all are online."""
    prefect = str(BIN / "prefect")
    if subprocess.run([prefect, "work-pool", "inspect", pool], env=env, capture_output=True,
                      timeout=120).returncode != 0:
        made = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"],
                              env=env, capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            raise SystemExit(f"could not create work pool {pool!r}: {made.stdout}{made.stderr}")
    # a worker asks for runs every PREFECT_WORKER_QUERY_SECONDS (Prefect's default: 10)
    worker_env = {"PREFECT_WORKER_QUERY_SECONDS": "5", **env}
    names = []
    for i in range(1, n + 1):
        name = f"worker-{i}"
        names.append(f"{pool}-{name}")
        proc = _spawn(name, [prefect, "worker", "start", "--pool", pool, "--type", "process",
                             "--name", names[-1], "--limit", "1"], worker_env)
        services[name] = {"pid": proc.pid, "started": _started(proc.pid), "pool": pool}
        _save(services)
    url = f"{env['PREFECT_API_URL'].rstrip('/')}/work_pools/{pool}/workers/filter"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for name in (f"worker-{i}" for i in range(1, n + 1)):
            if not psutil.pid_exists(int(services[name]["pid"])):  # type: ignore[call-overload]
                tail = (STATE / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited at start-up; log tail:\n{tail}")
        if set(names) <= online_workers(url):
            return
        time.sleep(1)
    raise SystemExit(f"workers {names} not online within 180 s; see {STATE}/worker-*.log")


def online_workers(filter_url: str) -> set[str]:
    """The names of the ONLINE workers ``POST .../work_pools/<pool>/workers/filter`` lists."""
    request = urllib.request.Request(filter_url, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return {w["name"] for w in json.load(r) if w.get("status") == "ONLINE"}
    except (OSError, ValueError):
        return set()


def _started(pid: int) -> float | None:
    """The process's start time (psutil ``create_time``); None when it is already gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _ours(info: dict[str, object]) -> bool:
    """Whether the recorded process still runs and is the one this script started: same PID
    and same start time (a PID reused by another program is never signalled; a record without
    a start time, written by an older version, is not trusted)."""
    started = info.get("started")
    now = _started(int(str(info["pid"])))
    return isinstance(started, float | int) and now is not None and abs(now - started) < 0.05


def _save(services: dict[str, dict[str, object]]) -> None:
    PIDS.write_text(json.dumps(services, indent=2))


def _write_env(env: dict[str, str]) -> None:
    keys = ["MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME",
            "PREFECT_SERVER_ANALYTICS_ENABLED", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "NISER_HPO_POOL", "NISER_OPTUNA_STORAGE",
            "PGPASSFILE",  # the path of the cluster's passfile, never the password
            # only the moto server's placeholder keys: real AWS credentials are never written
            "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    lines = [f"export {k}={shlex.quote(str(env[k]))}\n" for k in keys
             if k in env and (not k.startswith("AWS_") or env.get("AWS_ACCESS_KEY_ID") == "moto-local")]
    ENV_FILE.write_text("".join(lines))


def stop() -> None:
    loaded = _load()
    for name, info in reversed(loaded.items()):  # workers and runner before their servers
        if name == "postgres":  # last, once its clients are gone
            continue
        pid = int(info["pid"])  # type: ignore[call-overload]
        if not _ours(info):
            if psutil.pid_exists(pid):
                print(f"not stopped {name}: pid {pid} is no longer the process this script "
                      "started (another program has that PID now, or no start time was "
                      "recorded)")
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            continue
        deadline = time.monotonic() + 15
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if psutil.pid_exists(pid):
            os.killpg(pid, signal.SIGKILL)
        print(f"stopped {name} (pid {pid})")
    if "postgres" in loaded:
        import postgres_backend

        if postgres_backend.stop(loaded["postgres"]):
            print(f"stopped postgres (pid {loaded['postgres']['pid']})")
    PIDS.unlink(missing_ok=True)


def status() -> None:
    for name, info in _load().items():
        state = "running" if _ours(info) or (name == "postgres" and psutil.pid_exists(
            int(info["pid"]))) else "stopped"  # type: ignore[call-overload]
        print(f"{name:8} {state:8} pid {info['pid']}  {info.get('url', '')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["start", "stop", "status"])
    p.add_argument("--no-runner", action="store_true", help="start the servers only")
    p.add_argument("--workers", type=int, default=int(os.environ.get("NISER_WORKERS") or 0),
                   help="Prefect workers to start on the process work pool --pool "
                        "(default: $NISER_WORKERS, else 0)")
    p.add_argument("--pool", default=DEFAULT_POOL, help="the work pool of --workers")
    p.add_argument("--backend", default=os.environ.get("NISER_BACKEND", "sqlite"),
                   help=f"MLflow's store, one of {BACKENDS} (default: $NISER_BACKEND or sqlite)")
    p.add_argument("--upgrade-db", action="store_true",
                   help="run `mlflow db upgrade` on a PostgreSQL database of an older MLflow")
    a = p.parse_args()
    if a.workers < 0:
        p.error(f"--workers must be >= 0, got {a.workers}")
    if a.command == "start":
        start(not a.no_runner, a.backend, a.upgrade_db, a.workers, a.pool)
    elif a.command == "stop":
        stop()
    else:
        status()


if __name__ == "__main__":
    main()
