"""A tiny session server for the replay tests: the API of ``niser-mlops session-server`` over
``http.server`` in a thread on 127.0.0.1, with stalls on the fake clock, chosen failures and
chosen wrong answers."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bench.clock import FakeClock
from deployers.base import Prediction

ENDPOINT_MS, STORE_MS = 2.0, 0.25
_CLICK = re.compile(r"^/sessions/([A-Za-z0-9_.:-]{1,128})/clicks$")
_SESSION = re.compile(r"^/sessions/([A-Za-z0-9_.:-]{1,128})$")


def recommend(clicks: list[int], k: int) -> list[int]:
    """The fake model: top-k items as a pure function of the session's clicks."""
    base = sum(clicks) * 7 + len(clicks)
    return [base + j for j in range(k)]


def direct_invoker(sessions: list[list[int]], k: int = 20) -> Prediction:
    """The fake model called directly, as a deployer's invoker would be."""
    return Prediction([recommend(s, k) for s in sessions], [[1.0] * k for _ in sessions])


class FakeSessionServer:
    """Answers the session API; ``advance_s(session_id, position)`` is how long (on ``clock``)
    a click takes, ``fail`` maps items to an error status, ``wrong`` items get a wrong answer.

    ``log`` holds every click received, per session, in arrival order; ``overlap`` counts clicks
    that arrived while another click of their session was in flight."""

    def __init__(self, clock: FakeClock | None = None,
                 advance_s: Callable[[str, int], float] = lambda sid, pos: 0.0,
                 fail: dict[int, int] | None = None, wrong: set[int] | None = None,
                 max_clicks: int = 50) -> None:
        self.clock, self.advance_s = clock, advance_s
        self.fail, self.wrong = fail or {}, wrong or set()
        self.max_clicks = max_clicks
        self.sessions: dict[str, list[int]] = {}
        self.log: dict[str, list[int]] = defaultdict(list)
        self.deleted: list[str] = []
        self.overlap = 0
        self._busy: set[str] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> FakeSessionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def click(self, sid: str, item: int, k: int) -> tuple[int, dict[str, object], str]:
        with self.lock:
            if sid in self._busy:
                self.overlap += 1
            self._busy.add(sid)
            self.log[sid].append(item)
            clicks = self.sessions.setdefault(sid, [])
            clicks.append(item)
            held = clicks[-self.max_clicks:]
            position = len(clicks) - 1
        try:
            wait = self.advance_s(sid, position)
            if wait and self.clock is not None:
                self.clock.advance(wait)
            timing = f"store;dur={STORE_MS}, endpoint;dur={ENDPOINT_MS}, total;dur=3.0"
            if item in self.fail:
                return self.fail[item], {"error": f"endpoint failed for item {item}",
                                         "field": "item"}, timing
            items = recommend(held, k)
            if item in self.wrong:
                items = items[::-1]
            return 200, {"session_id": sid, "clicks": held, "items": items,
                         "scores": [1.0] * k, "unknown_items": [], "fallback": False}, timing
        finally:
            with self.lock:
                self._busy.discard(sid)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: object | None, timing: str | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if timing:
                    self.send_header("Server-Timing", timing)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, {"status": "ok", "deployer": "fake", "deployment": "fake",
                                     "store": "sqlite"})
                else:
                    self._send(404, {"error": f"no route {self.path}", "field": "path"})

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                match = _CLICK.match(parts.path)
                if not match:
                    self._send(400, {"error": f"bad path {parts.path}", "field": "session_id"})
                    return
                k = int(parse_qs(parts.query).get("k", ["20"])[0])
                status, answer, timing = server.click(match.group(1), int(body["item"]), k)
                self._send(status, answer, timing)

            def do_DELETE(self) -> None:
                match = _SESSION.match(self.path)
                sid = match.group(1) if match else ""
                with server.lock:
                    known = server.sessions.pop(sid, None) is not None
                    server.deleted.append(sid)
                self._send(204 if known else 404, None if known else {"error": "unknown"})

        return Handler


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.bench.replay_support --port-file F``: serve until SIGTERM, port in F
    (write-then-rename), as ``niser-mlops session-server --port 0 --port-file F`` does."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args, _ = parser.parse_known_args(argv)
    server = FakeSessionServer()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{server.httpd.server_address[1]}\n")
        os.replace(tmp, args.port_file)
        stop.wait()


if __name__ == "__main__":
    main()
