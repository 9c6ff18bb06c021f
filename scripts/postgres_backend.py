"""The PostgreSQL tracking backend of ``scripts/services.py start --backend postgres``.

A cluster of Debian's ``postgresql`` package (the newest ``/usr/lib/postgresql/*/bin``), one per
state directory:

    .state/postgres/          the cluster (``initdb`` once, re-used by every later start)
    .state/postgres.pgpass    its password, mode 0600, in libpq's passfile format
    .state/postgres.log       the server's log

It listens on 127.0.0.1 only, on a port chosen at each start, without a Unix socket; the one role
``mlflow`` (the cluster's superuser) logs in with a generated password, and MLflow's tables live in
the database ``mlflow``; ``optuna`` holds the Optuna studies of ``hpo`` (``optuna_url``), which its
shards on any machine share. The password is never on a command line, in an environment variable, a
URI or a log: MLflow and ``psycopg`` read it from the passfile (``PGPASSFILE``, libpq's own
mechanism), so the store URI ``postgresql://mlflow@127.0.0.1:PORT/mlflow`` carries none. Clients
need none either: they talk to the MLflow server over HTTP, artifacts included (proxied
``mlflow-artifacts:`` URIs).

PostgreSQL refuses to run as root: as root, ``initdb``, ``pg_ctl`` and the server run as the
package's ``postgres`` user (``runuser``), which must be able to reach the state directory.

Migrations: a database written by an older MLflow is not upgraded behind your back (MLflow's
migrations are not transactional; take a backup first): start refuses with the command to run, and
``--upgrade-db`` runs ``mlflow db upgrade`` on it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import psycopg

PG_ROOT = Path("/usr/lib/postgresql")
ROLE = DATABASE = "mlflow"
OPTUNA_DATABASE = "optuna"
DEFAULT_BUCKET = "niser-mlflow"
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
OWNER = "postgres"


def binaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL installed, or None when there is none."""
    found = [p.parent for p in PG_ROOT.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
               default=None)


def _as_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner: ``postgres`` when we are root."""
    return ["runuser", "-u", OWNER, "--"] if os.geteuid() == 0 else []


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OWNER, OWNER)


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run([*_as_owner(), *cmd], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise SystemExit(f"{what} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def artifacts_destination(aws: str) -> str:
    """``s3://<bucket>/mlflow``: the moto server's bucket, or with ``NISER_AWS=real`` the bucket
    named by ``NISER_ARTIFACT_BUCKET`` (required then: the project creates nothing in your S3)."""
    bucket = os.environ.get("NISER_ARTIFACT_BUCKET", "")
    if aws == "real" and not bucket:
        raise SystemExit("--backend postgres with NISER_AWS=real keeps the artifacts in your S3: "
                         "set NISER_ARTIFACT_BUCKET to a bucket you own")
    bucket = bucket or DEFAULT_BUCKET
    if not BUCKET_RE.fullmatch(bucket):
        raise SystemExit(f"NISER_ARTIFACT_BUCKET={bucket!r} is not an S3 bucket name "
                         "(3-63 characters: lower-case letters, digits, '.' and '-')")
    return f"s3://{bucket}/mlflow"


def create_bucket(destination: str, endpoint_url: str) -> None:
    """Create the bucket of ``destination`` on the moto server at ``endpoint_url``."""
    import boto3

    bucket = destination.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                      aws_access_key_id="moto-local", aws_secret_access_key="moto-local")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def _initdb(bin_dir: Path, data: Path, passfile: Path) -> None:
    """Create the cluster in ``data`` and its passfile (once)."""
    password = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: nothing to escape in a passfile
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"127.0.0.1:*:*:{ROLE}:{password}\n")
    # initdb reads the password from a file of its owner's, removed as soon as it has
    pwfile = data.parent / f".{data.name}-initdb-{secrets.token_hex(4)}"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        _own(pwfile)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={pwfile}",
              "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions"], "initdb")
    finally:
        pwfile.unlink(missing_ok=True)


def _reachable(state: Path) -> None:
    if os.geteuid() == 0:
        seen = subprocess.run(["runuser", "-u", OWNER, "--", "test", "-x", str(state)],
                              capture_output=True, timeout=30)
        if seen.returncode != 0:
            raise SystemExit(f"PostgreSQL runs as the user {OWNER!r}, which cannot reach {state} "
                             "(a directory above it is not searchable by others): set "
                             "NISER_STATE_DIR to a directory it can reach, e.g. /var/tmp/niser-state")


def start(state: Path, port: int) -> dict[str, object]:
    """Start the cluster of ``state`` on 127.0.0.1:``port`` (``initdb`` on the first start) with
    the database ``mlflow``; the record services.py keeps: pid, url (no password), data, passfile."""
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                         "apt-get install postgresql (scripts/setup.sh does), or use --backend sqlite")
    data, passfile, log = state / "postgres", state / "postgres.pgpass", state / "postgres.log"
    _reachable(state)
    if (data / "PG_VERSION").exists():
        if not passfile.exists():
            raise SystemExit(f"{data} exists but its password file {passfile} is missing: remove "
                             f"{data} to start over (it deletes the runs it holds)")
        if (data / "PG_VERSION").read_text().strip() != bin_dir.parent.name:
            raise SystemExit(f"{data} is a PostgreSQL {(data / 'PG_VERSION').read_text().strip()} "
                             f"cluster, the binaries are {bin_dir.parent.name}: upgrade it with "
                             "pg_upgrade, or remove it to start over")
    else:
        passfile.unlink(missing_ok=True)  # of a cluster that never finished its initdb
        data.mkdir(mode=0o700, exist_ok=True)
        _own(data)
        _initdb(bin_dir, data, passfile)
    log.touch()
    _own(log)
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
          "start"], "pg_ctl start", log)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    info: dict[str, object] = {"pid": pid, "url": f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}",
                               "data": str(data), "passfile": str(passfile), "bin": str(bin_dir)}
    try:
        _create_database(info)
    except BaseException:
        stop(info)
        raise
    return info


def connect(info: dict[str, object], database: str = DATABASE) -> psycopg.Connection[Any]:
    """A ``psycopg`` connection (autocommit) to ``database`` of the cluster ``info`` describes."""
    import psycopg

    port = int(str(info["url"]).rsplit(":", 1)[1].split("/")[0])
    return psycopg.connect(host="127.0.0.1", port=port, user=ROLE, dbname=database,
                           passfile=str(info["passfile"]), connect_timeout=10, autocommit=True)


def _create_database(info: dict[str, object]) -> None:
    conn = connect(info, "postgres")
    try:
        with conn.cursor() as cur:
            for name in (DATABASE, OPTUNA_DATABASE):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def optuna_url(info: dict[str, object]) -> str:
    """The Optuna storage URL of the cluster (no password: clients need ``PGPASSFILE``)."""
    base = str(info["url"]).rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{OPTUNA_DATABASE}"


def mlflow_env(info: dict[str, object]) -> dict[str, str]:
    """What the MLflow server's environment needs to reach the database: libpq's passfile."""
    return {"PGPASSFILE": str(info["passfile"])}


def schema_head() -> str:
    """The newest revision of the installed MLflow's tracking schema (its alembic head)."""
    from alembic.script import ScriptDirectory

    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations
    script = ScriptDirectory(str(Path(spec.submodule_search_locations[0]) / "store" / "db_migrations"))
    return str(script.get_current_head())


def check_schema(info: dict[str, object], mlflow_bin: Path, upgrade: bool) -> str | None:
    """``SystemExit`` with the command to run when the database holds an older MLflow schema
    (unless ``upgrade``: then ``mlflow db upgrade`` runs on it); the revision found, None when
    the database is new (MLflow creates its tables at start)."""
    conn = connect(info)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
            row = cur.fetchone()
            found = None
            if row and row[0]:
                cur.execute("SELECT version_num FROM alembic_version")
                rev = cur.fetchone()
                found = str(rev[0]) if rev else None
    finally:
        conn.close()
    head = schema_head()
    if found is None or found == head:
        return found
    if not upgrade:
        raise SystemExit(
            f"the MLflow database {info['url']} has schema revision {found}, this MLflow "
            f"expects {head}: back it up (pg_dump), then start again with --upgrade-db, which "
            "runs `mlflow db upgrade` on it")
    done = subprocess.run([str(mlflow_bin), "db", "upgrade", str(info["url"])],
                          env={**os.environ, **mlflow_env(info)}, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"`mlflow db upgrade` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return found


def stop(info: dict[str, object]) -> bool:
    """Stop the cluster ``info`` describes, cleanly (``pg_ctl stop -m fast``: clients are
    disconnected, the data is checkpointed); True when it was running. A postmaster that does
    not stop so gets SIGINT (the same fast shutdown), by PID, then SIGKILL."""
    pid, data = int(str(info["pid"])), Path(str(info["data"]))
    pidfile = data / "postmaster.pid"
    if not psutil.pid_exists(pid) or not pidfile.exists() or pidfile.read_text().split()[:1] != [str(pid)]:
        return False  # not ours any more: that PID was reused, or the cluster is down
    pg_ctl = str(Path(str(info["bin"])) / "pg_ctl")
    done = subprocess.run([*_as_owner(), pg_ctl, "-D", str(data), "stop", "-m", "fast", "-w",
                           "-t", "30"], capture_output=True, timeout=60)
    if done.returncode != 0 and psutil.pid_exists(pid):
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
    return True
