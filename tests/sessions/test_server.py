"""The session server as a real process in front of a real local deployment (mlflow models serve),
with the SQLite store and with a real redis-server."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from deployers.local import LocalDeployer
from tests.conftest import TINY_RAW_BASE, TINY_RAW_STEP
from tests.sessions.conftest import SessionServer

ITEMS = [TINY_RAW_BASE + TINY_RAW_STEP * k for k in range(60)]  # the tiny model's raw ids
UNKNOWN = 987_654_321


@pytest.fixture(scope="module")
def local(registered_model_uri: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[LocalDeployer, str]]:
    deployer = LocalDeployer(state_dir=tmp_path_factory.mktemp("local-state"))
    settings = {"workers": 1, "torch_threads": 1, "startup_timeout_s": 180}
    with deployer.deployed(registered_model_uri, settings) as endpoint:
        yield deployer, endpoint.name


def _server(tmp: Path, deployer: LocalDeployer, name: str, *args: str) -> SessionServer:
    return SessionServer(tmp, "--deployer", "local", "--deployment", name, *args,
                         env={"NISER_LOCAL_STATE_DIR": str(deployer.state_dir)})


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, local: tuple[LocalDeployer, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionServer]:
    deployer, name = local
    tmp = tmp_path_factory.mktemp(f"session-{request.param}")
    store = (f"sqlite:///{tmp / 'sessions.db'}" if request.param == "sqlite"
             else request.getfixturevalue("redis_server"))
    srv = _server(tmp, deployer, name, "--store", store, "--max-clicks", "4").start()
    yield srv
    srv.stop()


def _direct(local: tuple[LocalDeployer, str], clicks: list[int], k: int = 20) -> list[int]:
    deployer, name = local
    return deployer.invoker(name)([clicks], k).items[0]


def test_clicks_accumulate_and_each_answer_is_the_deployments_for_the_session_so_far(
        server: SessionServer, local: tuple[LocalDeployer, str]) -> None:
    sid = f"visitor-{id(server)}"
    for n, item in enumerate(ITEMS[:3], start=1):
        status, body, headers = server.call("POST", f"/sessions/{sid}/clicks?k=5", {"item": item})
        assert status == 200, body
        assert body["clicks"] == ITEMS[:n]
        assert body["items"] == _direct(local, ITEMS[:n], 5) and len(body["scores"]) == 5
        assert {"store", "endpoint", "total"} <= {
            part.split(";")[0].strip() for part in headers["server-timing"].split(",")}
    status, body, _ = server.call("GET", f"/sessions/{sid}")
    assert status == 200 and body["clicks"] == ITEMS[:3]
    assert body["expires_at"] - body["last_click_at"] == pytest.approx(30 * 60)


def test_only_the_newest_clicks_are_kept_and_sent_to_the_model(
        server: SessionServer, local: tuple[LocalDeployer, str]) -> None:
    sid = f"long-{id(server)}"
    for item in ITEMS[:6]:
        status, body = server.click(sid, item)
        assert status == 200
    assert body["clicks"] == ITEMS[2:6]  # --max-clicks 4
    assert body["items"] == _direct(local, ITEMS[2:6])


def test_concurrent_clicks_on_one_session_are_all_kept_in_order(server: SessionServer) -> None:
    sid = f"busy-{id(server)}"
    answers: list[list[int]] = []
    lock = threading.Lock()
    srv_wide = ITEMS[10:14]

    def click(item: int) -> None:
        status, body = server.click(sid, item)
        with lock:
            answers.append(body["clicks"] if status == 200 else [status])

    threads = [threading.Thread(target=click, args=(item,)) for item in srv_wide]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, final, _ = server.call("GET", f"/sessions/{sid}")
    assert sorted(final["clicks"]) == sorted(srv_wide)
    for clicks in answers:  # each answer: the session up to and including its own click
        assert final["clicks"][:len(clicks)] == clicks
    assert sorted(len(c) for c in answers) == [1, 2, 3, 4]


def test_an_unknown_item_is_kept_and_reported_as_the_deployment_reports_it(
        server: SessionServer) -> None:
    sid = f"odd-{id(server)}"
    server.click(sid, ITEMS[0])
    status, body = server.click(sid, UNKNOWN)
    assert status == 200
    assert body["clicks"] == [ITEMS[0], UNKNOWN] and body["unknown_items"] == [UNKNOWN]


def test_delete_ends_a_session_and_unknown_sessions_are_404(server: SessionServer) -> None:
    sid = f"bye-{id(server)}"
    server.click(sid, ITEMS[1])
    assert server.call("DELETE", f"/sessions/{sid}")[0] == 204
    status, body, _ = server.call("GET", f"/sessions/{sid}")
    assert status == 404 and body["field"] == "session_id" and sid in body["error"]
    assert server.call("DELETE", f"/sessions/{sid}")[0] == 404


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("item as a string", {"body": {"item": "12"}}, 400, "item"),
    ("item zero", {"body": {"item": 0}}, 400, "item"),
    ("item negative", {"body": {"item": -5}}, 400, "item"),
    ("item float", {"body": {"item": 3.0}}, 400, "item"),
    ("item true", {"body": {"item": True}}, 400, "item"),
    ("item too large", {"body": {"item": 2**63}}, 400, "item"),
    ("no item", {"body": {"items": [1]}}, 400, "item"),
    ("body a list", {"body": [1]}, 400, "item"),
    ("body not JSON", {"raw": b"{item: 1"}, 400, "body"),
    ("k zero", {"body": {"item": 1}, "query": "?k=0"}, 400, "k"),
    ("k too large", {"body": {"item": 1}, "query": "?k=1001"}, 400, "k"),
    ("k not a number", {"body": {"item": 1}, "query": "?k=ten"}, 400, "k"),
    ("oversized body", {"raw": json.dumps({"item": 1, "pad": "x" * 5000}).encode()}, 413,
     "body"),
    ("form content type", {"body": {"item": 1}, "content_type": "text/plain"}, 415,
     "content-type"),
    ("session id too long", {"body": {"item": 1}, "sid": "s" * 129}, 400, "session_id"),
    ("session id with a space", {"body": {"item": 1}, "sid": "a%20b"}, 400, "session_id"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_a_4xx_naming_the_field_and_keeps_nothing(
        server: SessionServer, case: tuple[str, dict[str, Any], int, str]) -> None:
    _, spec, status, field = case
    sid = spec.get("sid", f"bad-{abs(hash(case[0]))}")
    got, body, _ = server.call(
        "POST", f"/sessions/{sid}/clicks{spec.get('query', '')}", body=spec.get("body"),
        raw=spec.get("raw"), content_type=spec.get("content_type", "application/json"))
    assert got == status, body
    assert body["field"] == field and body["error"]
    if field != "session_id":
        assert server.call("GET", f"/sessions/{sid}")[0] == 404  # no click was recorded
    assert server.click("after-bad-input", ITEMS[0])[0] == 200  # and the server still serves


def test_sqlite_sessions_survive_a_restart(local: tuple[LocalDeployer, str],
                                           tmp_path: Path) -> None:
    deployer, name = local
    store = f"sqlite:///{tmp_path / 'kept.db'}"
    first = _server(tmp_path, deployer, name, "--store", store).start()
    try:
        first.click("kept", ITEMS[3])
        first.click("kept", ITEMS[4])
    finally:
        first.stop()
    second = _server(tmp_path, deployer, name, "--store", store).start()
    try:
        status, body, _ = second.call("GET", "/sessions/kept")
        assert status == 200 and body["clicks"] == [ITEMS[3], ITEMS[4]]
        assert second.click("kept", ITEMS[5])[1]["clicks"] == [ITEMS[3], ITEMS[4], ITEMS[5]]
    finally:
        second.stop()


def _scoring_processes(deployer: LocalDeployer, name: str) -> list[psutil.Process]:
    state = json.loads((deployer.state_dir / f"{name}.json").read_text())
    out = []
    for server in state["servers"]:
        proc = psutil.Process(server["process"]["pid"])
        out += [proc, *proc.children(recursive=True)]
    return out


def test_a_stalled_deployment_gives_504_keeps_the_click_and_the_server_keeps_serving(
        local: tuple[LocalDeployer, str], tmp_path: Path) -> None:
    deployer, name = local
    srv = _server(tmp_path, deployer, name, "--store", f"sqlite:///{tmp_path / 's.db'}",
                  "--endpoint-timeout-s", "1").start()
    stopped = _scoring_processes(deployer, name)
    try:
        for proc in stopped:
            proc.send_signal(signal.SIGSTOP)
        status, body = srv.click("stalled", ITEMS[7])
        assert status == 504 and "did not answer within 1 s" in body["error"]
        assert body["clicks"] == [ITEMS[7]]
        assert srv.call("GET", "/health")[0] == 200
    finally:
        for proc in stopped:
            proc.send_signal(signal.SIGCONT)
    try:
        status, body = srv.click("stalled", ITEMS[8])
        assert status == 200 and body["clicks"] == [ITEMS[7], ITEMS[8]]
    finally:
        srv.stop()


def test_a_dead_deployment_gives_502_with_the_reason_and_keeps_the_click(
        registered_model_uri: str, tmp_path: Path) -> None:
    deployer = LocalDeployer(state_dir=tmp_path / "state")
    endpoint = deployer.deploy(registered_model_uri, {"workers": 1, "torch_threads": 1,
                                                      "startup_timeout_s": 180})
    srv = _server(tmp_path, deployer, endpoint.name, "--store",
                  f"sqlite:///{tmp_path / 's.db'}").start()
    try:
        assert srv.click("doomed", ITEMS[0])[0] == 200
        deployer.teardown(endpoint.name)
        status, body = srv.click("doomed", ITEMS[1])
        assert status == 502 and f"local/{endpoint.name} failed" in body["error"]
        assert body["clicks"] == [ITEMS[0], ITEMS[1]]
        assert srv.call("GET", "/sessions/doomed")[1]["clicks"] == [ITEMS[0], ITEMS[1]]
        assert srv.call("GET", "/health")[0] == 200
    finally:
        srv.stop()
        deployer.teardown(endpoint.name)


def test_an_unknown_deployment_is_refused_at_start_naming_the_option(
        local: tuple[LocalDeployer, str], tmp_path: Path) -> None:
    deployer, _ = local
    srv = _server(tmp_path, deployer, "no-such-deployment")
    with pytest.raises(RuntimeError, match="did not start"):
        srv.start()
    assert "--deployment" in srv.log() and "no-such-deployment" in srv.log()


def _mapped(procs: list[psutil.Process], package: str) -> bool:
    """Whether any of ``procs`` has loaded a shared object of ``package`` (its C extension)."""
    return any(f"/{package}/" in m.path for p in procs for m in p.memory_maps())


def test_the_session_server_runs_the_c_http_stack_and_the_scoring_server_mlflows_plain_one(
        server: SessionServer, local: tuple[LocalDeployer, str]) -> None:
    assert server.proc is not None
    session_server = [psutil.Process(server.proc.pid)]
    assert _mapped(session_server, "httptools") and _mapped(session_server, "uvloop")
    scoring = _scoring_processes(*local)
    assert not _mapped(scoring, "httptools") and not _mapped(scoring, "uvloop")


def test_the_plain_python_http_stack_serves_the_same_answers(
        local: tuple[LocalDeployer, str], tmp_path: Path) -> None:
    deployer, name = local
    srv = _server(tmp_path, deployer, name, "--store", f"sqlite:///{tmp_path / 's.db'}",
                  "--http", "h11", "--loop", "asyncio").start()
    try:
        assert srv.proc is not None and not _mapped([psutil.Process(srv.proc.pid)], "httptools")
        srv.click("plain", ITEMS[0])
        status, body = srv.click("plain", ITEMS[1], k=5)
        assert status == 200 and body["items"] == _direct(local, [ITEMS[0], ITEMS[1]], 5)
        assert srv.call("POST", "/sessions/plain/clicks", raw=b"{")[0] == 400
    finally:
        srv.stop()
