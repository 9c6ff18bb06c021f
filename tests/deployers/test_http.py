"""The HTTP invoker and the start-up wait, against a small real HTTP server in this process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployers.base import DeployerError, InvocationError
from deployers.http import HttpInvoker, free_port, ping, probe, wait_for_ping


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    drop_after_answer = False  # close the connection silently after each answer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.server.answers += 1  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if type(self).drop_after_answer:
            self.close_connection = True

    def do_GET(self) -> None:
        self._send(200 if self.path == "/ping" else 404, b"\n")

    def do_POST(self) -> None:
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        sessions = [r["session"] for r in request["dataframe_records"]]
        k = request["params"]["k"]
        if [500] in sessions:
            return self._send(500, b'{"error_code": "BAD", "message": "boom"}')
        if [0] in sessions:
            time.sleep(1.5)
        if [1] in sessions:
            return self._send(200, b'{"not": "the contract"}')
        rows = [{"items": [s[-1] + j for j in range(k)], "scores": [1.0 / (j + 1) for j in
                                                                    range(k)]}
                for s in sessions]
        self._send(200, json.dumps({"predictions": rows}).encode())


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.answers = 0  # type: ignore[attr-defined]
    srv.connections = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    _Handler.drop_after_answer = False


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_answer_parsed_and_connection_kept_alive(server: ThreadingHTTPServer) -> None:
    invoke = HttpInvoker(_url(server))
    for _ in range(5):
        answer = invoke([[10, 20], [5]], k=3)
    assert answer.items == [[20, 21, 22], [5, 6, 7]]
    assert answer.scores[0] == [1.0, 0.5, 1.0 / 3]
    assert answer.raw["predictions"][1]["items"] == [5, 6, 7]
    assert len(server.connections) == 1  # type: ignore[attr-defined]


def test_one_connection_per_thread_under_concurrency(server: ThreadingHTTPServer) -> None:
    invoke = HttpInvoker(_url(server))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: invoke([[i]], k=2).items, range(100, 160)))
    assert answers == [[[i, i + 1]] for i in range(100, 160)]
    assert 1 <= len(server.connections) <= 4  # type: ignore[attr-defined]
    invoke.close()


def test_non_2xx_raises_with_status_and_body(server: ThreadingHTTPServer) -> None:
    with pytest.raises(InvocationError, match="answered 500") as info:
        HttpInvoker(_url(server))([[500]], k=1)
    assert info.value.status == 500 and "boom" in info.value.body


def test_body_outside_the_contract_raises(server: ThreadingHTTPServer) -> None:
    with pytest.raises(InvocationError, match="no 'predictions' list") as info:
        HttpInvoker(_url(server))([[1]], k=1)
    assert info.value.status == 200


def test_refused_connection_raises_without_status() -> None:
    with pytest.raises(InvocationError, match="ConnectionRefusedError") as info:
        HttpInvoker(f"http://127.0.0.1:{free_port()}")([[2]], k=1)
    assert info.value.status is None


def test_per_request_timeout(server: ThreadingHTTPServer) -> None:
    invoke = HttpInvoker(_url(server), timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(InvocationError, match="timed out"):
        invoke([[0]], k=1)
    assert time.monotonic() - start < 1.2
    assert invoke([[4]], k=1).items == [[4]]  # the next request opens a fresh connection


def test_connection_closed_by_server_while_idle_is_reopened(
        server: ThreadingHTTPServer) -> None:
    _Handler.drop_after_answer = True
    invoke = HttpInvoker(_url(server))
    assert [invoke([[i]], k=1).items for i in (7, 8, 9)] == [[[7]], [[8]], [[9]]]
    assert server.answers == 3  # type: ignore[attr-defined]


def test_bad_url_refused() -> None:
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        HttpInvoker("127.0.0.1:8080")


def test_probe_gives_status_and_case_insensitive_headers_and_0_when_nothing_answers(
        server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a local server is never proxied
    status, headers = probe(_url(server) + "/ping")
    assert status == 200 and headers.get("content-type") == "application/json"
    assert probe(_url(server) + "/elsewhere")[0] == 404
    assert ping(_url(server)) and ping(_url(server) + "/")
    status, headers = probe(f"http://127.0.0.1:{free_port()}/ping")
    assert (status, len(headers)) == (0, 0)


def test_wait_for_ping_returns_once_the_server_answers(server: ThreadingHTTPServer) -> None:
    assert wait_for_ping(_url(server), timeout=5) < 5


def test_wait_for_ping_reports_a_dead_process_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; print('line one');"
                                 "print('fatal: no model here'); sys.exit(3)"], stdout=out)
    with pytest.raises(DeployerError, match=r"exited with code 3[\s\S]*fatal: no model here"):
        wait_for_ping(f"http://127.0.0.1:{free_port()}", timeout=30, process=proc, log_path=log)


def test_wait_for_ping_times_out_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("still loading\n")
    with pytest.raises(DeployerError, match=r"within 1 s[\s\S]*still loading"):
        wait_for_ping(f"http://127.0.0.1:{free_port()}", timeout=0.6, log_path=log)
