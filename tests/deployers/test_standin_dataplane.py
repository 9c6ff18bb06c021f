"""The nginx data plane's routing, against two small HTTP upstreams that say who they are."""

from __future__ import annotations

import http.server
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from deployers import procs
from deployers.standins.sagemaker_dataplane import DataPlane


class _Named(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        port = self.server.server_address[1]  # type: ignore[index]
        body = f"{port} {self.path}".encode()  # which upstream, and the path it was asked for
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstreams() -> Iterator[list[int]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Named) for _ in range(2)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield [int(srv.server_address[1]) for srv in servers]
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _post(url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_routes_each_endpoint_to_its_server_and_stops_with_the_last(upstreams: list[int]) -> None:
    plane = DataPlane()
    try:
        plane.route("ep-a", upstreams[0])
        plane.route("ep-b", upstreams[1], variant="Blue")
        assert _post(f"{plane.url}/endpoints/ep-a/invocations") == (
            200, f"{upstreams[0]} /invocations")
        assert _post(f"{plane.url}/endpoints/ep-b/invocations") == (
            200, f"{upstreams[1]} /invocations")
        status, body = _post(f"{plane.url}/endpoints/ep-c/invocations")
        assert status == 400 and "Endpoint ep-c not found" in body

        plane.route("ep-a", upstreams[1])  # a swap, as in a blue/green update
        assert _post(f"{plane.url}/endpoints/ep-a/invocations")[1].startswith(str(upstreams[1]))
        plane.unroute("ep-a")
        assert _post(f"{plane.url}/endpoints/ep-a/invocations")[0] == 400
        assert _post(f"{plane.url}/endpoints/ep-b/invocations")[0] == 200
        nginx = plane.record
        assert nginx is not None and procs.alive(nginx)
        plane.unroute("ep-b")
        assert not procs.alive(nginx) and not plane.prefix.exists()
        plane.unroute("ep-b")  # absent is not an error
    finally:
        plane.stop()


def test_refuses_a_name_sagemaker_would_refuse(upstreams: list[int]) -> None:
    plane = DataPlane()
    try:
        with pytest.raises(ValueError, match="not a valid SageMaker endpoint name"):
            plane.route("bad/name;", upstreams[0])
        assert plane.record is None
    finally:
        plane.stop()


def test_an_endpoint_of_several_servers_gets_them_round_robin(upstreams: list[int]) -> None:
    plane = DataPlane()
    try:
        plane.route("ep-two", upstreams)
        answered = [_post(f"{plane.url}/endpoints/ep-two/invocations") for _ in range(6)]
        assert {status for status, _ in answered} == {200}
        by_port = [int(body.split()[0]) for _, body in answered]
        assert sorted(set(by_port)) == sorted(upstreams)
        assert all(by_port.count(p) == 3 for p in upstreams)
        with pytest.raises(ValueError, match="at least one server port"):
            plane.route("ep-none", [])
    finally:
        plane.stop()


def test_an_endpoint_has_the_front_doors_rules(upstreams: list[int]) -> None:
    plane = DataPlane()
    try:
        plane.route("ep-door", upstreams[0])
        url = f"{plane.url}/endpoints/ep-door/invocations"
        req = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 415 and b"application/json" in info.value.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)  # GET
        assert info.value.code == 405 and info.value.headers["Allow"] == "POST"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{plane.url}/admin", timeout=5)
        assert info.value.code == 404
        assert plane.record is not None
        if os.geteuid() == 0:
            workers = psutil.Process(plane.record.pid).children()
            assert workers and all(w.username() != "root" for w in workers)
    finally:
        plane.stop()
