"""The services script hands out a Prefect UI that talks to its own server (``/ui-settings``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from types import ModuleType

import pytest

from tests.http_stub import serving
from tests.scripts import load_script


@pytest.fixture(scope="module")
def services() -> ModuleType:
    return load_script("services")


def _ui(answer: dict[str, object] | None) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if answer is None or self.path != "/ui-settings":
                self.send_error(404)
                return
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield f"{url}/api"


@pytest.fixture
def ui_pointing_elsewhere() -> Iterator[str]:
    yield from _ui({"api_url": "http://127.0.0.1:4200/api"})


@pytest.fixture
def no_ui() -> Iterator[str]:
    yield from _ui(None)


def test_a_ui_talking_to_another_server_stops_the_start_with_the_fix(services,
                                                                      ui_pointing_elsewhere):
    assert services.ui_api_url(ui_pointing_elsewhere) == "http://127.0.0.1:4200/api"
    with pytest.raises(SystemExit, match="PREFECT_UI_API_URL="):
        services.check_ui_settings(ui_pointing_elsewhere)


def test_a_server_without_a_ui_has_nothing_to_check(services, no_ui):
    assert services.ui_api_url(no_ui) is None
    services.check_ui_settings(no_ui)


def test_the_services_and_their_env_file_suppress_mlflows_genai_view_links(
        services, tmp_path, monkeypatch):
    monkeypatch.setattr(services, "ENV_FILE", tmp_path / "env.sh")
    env = services.base_env()
    assert env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    services._write_env({**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
                         "PREFECT_API_URL": "http://127.0.0.1:2/api"})
    text = (tmp_path / "env.sh").read_text()
    assert "export MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true" in text


def test_env_file_values_are_shell_quoted(services, tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(services, "ENV_FILE", tmp_path / "env.sh")
    home = str(tmp_path / "a dir; touch pwned $(echo x)")
    services._write_env({"MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "PREFECT_HOME": home})
    out = subprocess.run(["bash", "-c", f". {tmp_path / 'env.sh'} && printf %s \"$PREFECT_HOME\""],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out == home and not (tmp_path / "pwned").exists()


def test_stop_signals_only_a_process_with_the_recorded_start_time(services, tmp_path,
                                                                   monkeypatch, capsys):
    import subprocess

    import psutil

    mine = subprocess.Popen(["sleep", "60"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # "PID reused"
    try:
        monkeypatch.setattr(services, "PIDS", tmp_path / "services.json")
        started = psutil.Process(mine.pid).create_time()
        services._save({
            "runner": {"pid": mine.pid, "started": started},
            "mlflow": {"pid": other.pid, "started": started - 3600.0},  # another process now
            "prefect": {"pid": other.pid},  # an old record: no start time
        })
        services.stop()
        assert mine.wait(20) is not None
        assert other.poll() is None  # never signalled
        out = capsys.readouterr().out
        assert f"stopped runner (pid {mine.pid})" in out
        assert f"not stopped mlflow: pid {other.pid} is no longer the process" in out
        assert f"not stopped prefect: pid {other.pid}" in out
        assert not (tmp_path / "services.json").exists()
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()
