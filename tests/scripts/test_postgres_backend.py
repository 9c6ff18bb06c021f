"""MLflow on PostgreSQL + the moto server's S3, started by ``scripts/services.py start --backend
postgres``: a tiny train + register + one-target benchmark (``tests/flows/browser_run.py``, the
flow the browser test runs) lands its artifacts as objects in the bucket and its model version as a
row in PostgreSQL, ``mlflow models serve -m models:/niser@champion`` serves it from there, the
password is in no log, and a database of an older MLflow schema refuses to start.

Skips with the reason when PostgreSQL (Debian's ``postgresql``: scripts/setup.sh installs it) or
the moto server is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "services.py"
pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def pg() -> ModuleType:
    module = load_script("postgres_backend")
    if module.binaries() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql (scripts/setup.sh does it)")
    if not (Path(sys.executable).parent / "moto_server").exists():
        pytest.skip("moto_server is not installed: pip install -e '.[standins]'")
    return module


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines()
             if line.startswith("export "))
    return {k: shlex.split(v)[0] if v else "" for k, v in pairs}


def _services(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def state(pg) -> Iterator[Path]:
    # not under pytest's basetemp (mode 0700): the cluster's owner, postgres, must reach it
    root = Path(tempfile.mkdtemp(prefix="niser-pg-"))
    root.chmod(0o755)
    yield root / "state"
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def base_env(state) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME", "PREFECT_UI_API_URL", "NISER_ARTIFACT_BUCKET", "AWS_PROFILE")}
    return env | {"NISER_STATE_DIR": str(state), "NISER_AWS": "moto", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def services(base_env, state) -> Iterator[dict[str, str]]:
    """MLflow (PostgreSQL + moto S3), Prefect, moto and one worker on the process work pool
    ``niser-hpo``, started by services.py; stopped after."""
    began = time.monotonic()
    started = _services(base_env, "start", "--backend", "postgres", "--no-runner", "--workers", "1")
    print(f"services start --backend postgres: {time.monotonic() - began:.1f} s")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**base_env, **_env_file(state / "env.sh")}
    finally:
        _services(base_env, "stop")


@pytest.fixture(scope="module")
def cluster(services, state) -> dict[str, object]:
    return json.loads((state / "services.json").read_text())["postgres"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def tiny_run(services) -> dict[str, Any]:
    """The flow's summary: train, register as ``niser`` (champion: the registry is new), and a
    benchmark of in-process targets."""
    done = subprocess.run([sys.executable, "-m", "tests.flows.browser_run"], env=services,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_runs_artifacts_are_objects_in_the_moto_bucket(pg, services, tiny_run, state):
    import boto3

    s3 = boto3.client("s3", endpoint_url=services["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=services["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=services["AWS_SECRET_ACCESS_KEY"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=pg.DEFAULT_BUCKET, Prefix="mlflow/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    bench = tiny_run["benchmark_run_id"]
    assert any(k.endswith(f"/{bench}/artifacts/summary.json") for k in keys), keys
    assert any(f"/{tiny_run['mlflow_run_id']}/artifacts/" in k for k in keys), keys
    assert any(k.endswith("/MLmodel") for k in keys), keys  # the logged model itself
    assert not (state / "mlartifacts").exists()  # nothing kept on the tracking server's disk


def test_the_registered_version_is_a_row_in_postgres(pg, cluster, tiny_run):
    with pg.connect(cluster) as conn:
        rows = conn.execute("SELECT version, run_id FROM model_versions WHERE name = 'niser'"
                            ).fetchall()
        alias = conn.execute("SELECT version FROM registered_model_aliases "
                             "WHERE name = 'niser' AND alias = 'champion'").fetchone()
    assert (int(tiny_run["model_version"]), tiny_run["mlflow_run_id"]) in rows
    assert tiny_run["alias"] == "champion" and alias == (int(tiny_run["model_version"]),)


def test_mlflow_models_serve_champion_serves_from_there(services, tiny_run):
    from deployers.http import free_port
    from niser.pyfunc import EXAMPLE_REQUEST

    port = free_port()
    # no AWS keys, no endpoint: the model comes through the tracking server's artifact proxy
    client_env = {k: v for k, v in services.items() if not k.startswith("AWS_")}
    client_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{client_env.get('PATH', '')}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
         "models:/niser@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=client_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve never answered /ping"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(EXAMPLE_REQUEST).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
            assert len(json.load(answer)["predictions"][0]["items"]) > 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_a_sharded_hpo_study_lives_in_the_clusters_optuna_database(pg, cluster, services):
    assert services["NISER_OPTUNA_STORAGE"] == pg.optuna_url(cluster)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "hpo", "--n-trials", "2", "--epochs", "1",
         "--dataset", "synthetic:n_items=60,n_sessions=200", "--study-name", "on-postgres",
         "--work-pool", "niser-hpo", "--shards", "1"],
        env=services, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    conn = pg.connect(cluster, pg.OPTUNA_DATABASE)
    try:
        with conn.cursor() as cur:  # the shard's worker wrote the trials through PGPASSFILE
            cur.execute("SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
                        "WHERE s.study_name = 'on-postgres' ORDER BY t.number")
            assert [(n, str(state)) for n, state in cur.fetchall()] == [
                (0, "COMPLETE"), (1, "COMPLETE")]
    finally:
        conn.close()


def test_the_password_is_private_and_in_no_log_command_line_or_env_file(pg, cluster, services,
                                                                       tiny_run, state):
    passfile = Path(str(cluster["passfile"]))
    assert passfile.stat().st_mode & 0o777 == 0o600
    password = passfile.read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 24 and password not in str(cluster["url"])
    for path in state.iterdir():
        if path.is_file() and path != passfile:
            assert password not in path.read_text(errors="replace"), path
    mlflow_pid = json.loads((state / "services.json").read_text())["mlflow"]["pid"]
    assert password not in Path(f"/proc/{mlflow_pid}/cmdline").read_text(errors="replace")
    assert password not in Path(f"/proc/{mlflow_pid}/environ").read_text(errors="replace")
    assert "PGPASSWORD" not in services


def _older_schema(pg: ModuleType, info: dict[str, object]) -> str:
    """Make the database ``mlflow`` a new one of the MLflow schema two revisions before the
    installed MLflow's (MLflow's own initial tables and migrations, stopped early)."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import InitialBase, _get_alembic_config

    script = _mlflow_migrations()
    older = script.get_revision(script.get_revision(pg.schema_head()).down_revision).down_revision
    with pg.connect(info, "postgres") as conn:
        conn.execute(f"DROP DATABASE {pg.DATABASE}")
        conn.execute(f"CREATE DATABASE {pg.DATABASE}")
    os.environ["PGPASSFILE"] = str(info["passfile"])
    try:
        engine = sqlalchemy.create_engine(str(info["url"]))
        InitialBase.metadata.create_all(engine)
        config = _get_alembic_config(str(info["url"]))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, older)
        engine.dispose()
    finally:
        del os.environ["PGPASSFILE"]
    return str(older)


def _mlflow_migrations():  # type: ignore[no-untyped-def]
    from alembic.script import ScriptDirectory

    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations
    return ScriptDirectory(str(Path(spec.submodule_search_locations[0]) / "store" / "db_migrations"))


def test_an_older_mlflow_schema_refuses_to_start_and_upgrade_db_migrates_it(
        pg, cluster, services, tiny_run, base_env, state):
    """Last of the service tests: it stops them. Later starts re-use the cluster (no initdb)."""
    from deployers.http import free_port

    assert _services(base_env, "stop").returncode == 0
    version_file = Path(str(cluster["data"])) / "PG_VERSION"
    created = version_file.stat().st_mtime_ns
    alone = pg.start(state, free_port())
    try:
        older = _older_schema(pg, alone)
    finally:
        pg.stop(alone)
    again = _services(base_env, "start", "--backend", "postgres", "--no-runner")
    assert again.returncode != 0
    assert f"schema revision {older}" in again.stderr and "--upgrade-db" in again.stderr
    assert "mlflow db upgrade" in again.stderr
    assert not (state / "services.json").exists()  # what it started, it stopped
    assert not (Path(str(cluster["data"])) / "postmaster.pid").exists()
    # what --upgrade-db does before MLflow starts
    alone = pg.start(state, free_port())
    try:
        assert pg.check_schema(alone, Path(sys.executable).parent / "mlflow", upgrade=True) == older
        assert pg.check_schema(alone, Path(sys.executable).parent / "mlflow", upgrade=False) \
            == pg.schema_head()
    finally:
        pg.stop(alone)
    assert version_file.stat().st_mtime_ns == created


def test_real_aws_needs_a_bucket_and_a_bad_bucket_name_is_refused(monkeypatch):
    pg = load_script("postgres_backend")
    monkeypatch.delenv("NISER_ARTIFACT_BUCKET", raising=False)
    with pytest.raises(SystemExit, match="set NISER_ARTIFACT_BUCKET"):
        pg.artifacts_destination("real")
    assert pg.artifacts_destination("moto") == "s3://niser-mlflow/mlflow"
    monkeypatch.setenv("NISER_ARTIFACT_BUCKET", "My_Bucket")
    with pytest.raises(SystemExit, match="NISER_ARTIFACT_BUCKET='My_Bucket'"):
        pg.artifacts_destination("real")
    monkeypatch.setenv("NISER_ARTIFACT_BUCKET", "team-mlflow")
    assert pg.artifacts_destination("real") == "s3://team-mlflow/mlflow"


def test_an_unknown_backend_is_refused_naming_the_option(tmp_path):
    env = {**os.environ, "NISER_STATE_DIR": str(tmp_path), "NISER_BACKEND": "mysql"}
    done = _services(env, "start", "--no-runner")
    assert done.returncode != 0 and "NISER_BACKEND='mysql'" in done.stderr
    assert not (tmp_path / "services.json").exists()
