"""Both stores keep the same promises (sessions.store), on a clock the tests move."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sessions.store import PURGE_EVERY_S, SessionStore, SQLiteStore, open_store, safe_label


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeStore = Callable[..., SessionStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    opened: list[SessionStore] = []
    url = (f"sqlite:///{tmp_path / 'sessions.db'}" if request.param == "sqlite"
           else request.getfixturevalue("redis_url"))

    def make(clock: Clock, ttl_s: float = 1800.0, max_clicks: int = 50) -> SessionStore:
        store = open_store(url, ttl_s=ttl_s, max_clicks=max_clicks, clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_clicks_accumulate_in_order_and_each_append_returns_the_session_after_it(
        make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(clock)
    assert store.append("s1", 5).clicks == [5]
    clock.now += 1
    assert store.append("s1", 7).clicks == [5, 7]
    assert store.append("s2", 9).clicks == [9]
    got = store.get("s1")
    assert got is not None and got.clicks == [5, 7]
    assert got.last_click_at == clock.now and got.expires_at == clock.now + 1800


def test_only_the_newest_max_clicks_are_kept(make_store: MakeStore) -> None:
    store = make_store(Clock(), max_clicks=3)
    for item in range(1, 8):
        session = store.append("s", item)
    assert session.clicks == [5, 6, 7]
    got = store.get("s")
    assert got is not None and got.clicks == [5, 6, 7]


def test_a_session_expires_ttl_after_its_last_click_and_a_new_click_starts_afresh(
        make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(clock, ttl_s=60)
    store.append("s", 1)
    clock.now += 59.9
    store.append("s", 2)  # refreshes the session
    clock.now += 59.9
    got = store.get("s")
    assert got is not None and got.clicks == [1, 2]
    clock.now += 0.1  # 60 s after the last click
    assert store.get("s") is None
    assert store.delete("s") is False
    assert store.append("s", 3).clicks == [3]


def test_delete_ends_a_session_and_says_whether_there_was_one(make_store: MakeStore) -> None:
    store = make_store(Clock())
    store.append("s", 1)
    assert store.delete("s") is True
    assert store.get("s") is None
    assert store.delete("s") is False
    assert store.get("never") is None


def test_concurrent_clicks_on_one_session_are_all_kept_each_answer_a_prefix_of_the_last(
        make_store: MakeStore) -> None:
    store = make_store(Clock(), max_clicks=1000)
    answers: list[list[int]] = []
    lock = threading.Lock()

    errors: list[BaseException] = []

    def click(item: int) -> None:
        try:
            clicks = store.append("busy", item).clicks
        except BaseException as exc:  # a thread's exception would otherwise only warn
            errors.append(exc)
            raise
        with lock:
            answers.append(clicks)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(1, 201)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = store.get("busy")
    assert final is not None and sorted(final.clicks) == list(range(1, 201))
    for clicks in answers:  # every answer is the session up to and including its own click
        assert final.clicks[:len(clicks)] == clicks
    assert sorted(len(c) for c in answers) == list(range(1, 201))


def test_sqlite_sessions_survive_reopening_the_file(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    store.append("s", 11)
    store.append("s", 12)
    store.close()
    reopened = SQLiteStore(tmp_path / "s.db", clock=clock)
    got = reopened.get("s")
    assert got is not None and got.clicks == [11, 12]
    reopened.close()


def test_sqlite_purges_expired_sessions_so_the_file_does_not_grow_without_bound(
        tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db", ttl_s=10, clock=clock)
    for n in range(100):
        store.append(f"old-{n}", 1)
    assert store.count() == 100
    clock.now += PURGE_EVERY_S
    store.append("new", 2)
    assert store.count() == 1
    store.close()


def test_redis_keys_carry_an_expiry_so_abandoned_sessions_leave(redis_url: str) -> None:
    import redis

    store = open_store(redis_url, ttl_s=60)
    store.append("s", 1)
    client = redis.Redis.from_url(redis_url)
    ttls = [client.pttl(key) for key in client.keys("niser-sessions:s:*")]
    assert len(ttls) == 2 and all(0 < t <= 120_000 for t in ttls)
    store.close()


def test_bad_store_settings_are_refused_naming_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        SQLiteStore(tmp_path / "a.db", ttl_s=0)
    with pytest.raises(ValueError, match="max_clicks"):
        SQLiteStore(tmp_path / "a.db", max_clicks=0)
    with pytest.raises(ValueError, match="expected sqlite:///PATH or redis://"):
        open_store("postgres://db/x")
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        open_store("sqlite://")


def test_an_unreachable_redis_is_named_without_its_password() -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError) as err:
        open_store(f"redis://user:s3cret@127.0.0.1:{port}/0")
    assert f"redis://127.0.0.1:{port}/0" in str(err.value)
    assert "s3cret" not in str(err.value)
    assert safe_label("redis://:pw@h:1/2?x=1") == "redis://h:1/2"


def test_max_clicks_above_the_contracts_session_cap_is_refused(make_store: MakeStore) -> None:
    from niser.contract import MAX_SESSION_IDS

    with pytest.raises(ValueError, match=f"above the limit of {MAX_SESSION_IDS}"):
        make_store(Clock(), max_clicks=MAX_SESSION_IDS + 1)
