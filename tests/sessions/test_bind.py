"""The listening socket is one asyncio will turn Nagle off on (see sessions.server.bind)."""

from __future__ import annotations

import socket

from sessions.server import bind, write_port


def test_the_listening_socket_names_tcp_so_answers_are_not_held_back_by_nagle() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_the_port_file_appears_whole(tmp_path) -> None:
    write_port(tmp_path / "port", 43210)
    assert (tmp_path / "port").read_text() == "43210\n"
    assert [p.name for p in tmp_path.iterdir()] == ["port"]
