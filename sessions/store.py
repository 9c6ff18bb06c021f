"""Where sessions live: SQLite (embedded, the default) or Redis, one set of promises.

Promises of every ``SessionStore``:

- ``append(session_id, item)`` is atomic: concurrent clicks on one session are all kept, in the
  order the store received them, and each call returns the session right after its own click.
- A session expires ``ttl_s`` after its last click (default 30 minutes, the session definition of
  the Diginetica and Yoochoose logs): ``get`` no longer finds it, and a later click starts a new
  session under the same id.
- At most ``max_clicks`` clicks are kept per session (the newest; default 50), so neither a
  session nor the store grows without bound: expired sessions are purged (SQLite: every
  ``PURGE_EVERY_S`` on the next click; Redis: a key expiry ``KEY_SLACK_S`` after the session's).
- Time comes from ``clock`` (``time.time`` by default), so tests move it instead of waiting.
- SQLite survives a restart (the file stays); Redis keeps what its own persistence keeps.

``open_store("sqlite:///path.db" | "redis://host:port/db", ...)`` picks the store by URL scheme;
``label`` is the URL without any password, for logs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from niser.contract import MAX_SESSION_IDS

DEFAULT_TTL_S = 30 * 60.0
DEFAULT_MAX_CLICKS = 50
PURGE_EVERY_S = 60.0
KEY_SLACK_S = 60.0
REDIS_PREFIX = "niser-sessions:"
POOL_SIZE = 16

Clock = Callable[[], float]


@dataclass(frozen=True)
class Session:
    """A session as stored: its clicks (oldest first) and when it was last clicked."""

    session_id: str
    clicks: list[int]
    last_click_at: float  # unix seconds
    expires_at: float


class SessionStore(ABC):
    """Sessions of item clicks with expiry and a click cap (see the module docstring)."""

    kind: str = ""
    inline: bool = False  # calls are quick enough to make on a server's event loop

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_clicks: int = DEFAULT_MAX_CLICKS,
                 clock: Clock = time.time) -> None:
        if not ttl_s > 0 or ttl_s == float("inf"):
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        if not isinstance(max_clicks, int) or max_clicks < 1:
            raise ValueError(f"max_clicks must be an integer >= 1, got {max_clicks!r}")
        if max_clicks > MAX_SESSION_IDS:
            raise ValueError(f"max_clicks {max_clicks} is above the limit of {MAX_SESSION_IDS}:"
                             " the serving contract refuses longer sessions")
        self.ttl_s = float(ttl_s)
        self.max_clicks = max_clicks
        self.clock = clock

    @abstractmethod
    def append(self, session_id: str, item: int) -> Session:
        """Add ``item`` as the session's newest click; returns the session after it."""

    @abstractmethod
    def get(self, session_id: str) -> Session | None:
        """The session, or None when unknown or expired."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """End the session; False when there was none (or it had expired)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @property
    @abstractmethod
    def label(self) -> str:
        """Where the sessions are, safe to log (no password)."""

    def _session(self, session_id: str, clicks: list[int], at: float) -> Session:
        return Session(session_id, clicks, at, at + self.ttl_s)

    def _expired(self, at: float, now: float) -> bool:
        return at + self.ttl_s <= now


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, last_click_at REAL NOT NULL, clicks TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_time ON sessions(last_click_at);
"""


def _items(text: str) -> list[int]:
    return [int(x) for x in text.split()]


class SQLiteStore(SessionStore):
    """Sessions in one SQLite file (WAL), a row per session with its clicks as text (a click is
    one read and one write of one row). Writes are serialised by a lock in this process and by
    SQLite's write lock across processes. Calls take ~0.1 ms: ``inline`` says a server may make
    them on its event loop instead of handing them to a thread."""

    kind = "sqlite"
    inline = True

    def __init__(self, path: str | Path, ttl_s: float = DEFAULT_TTL_S,
                 max_clicks: int = DEFAULT_MAX_CLICKS, clock: Clock = time.time) -> None:
        super().__init__(ttl_s, max_clicks, clock)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._last_purge = self.clock()

    @property
    def label(self) -> str:
        return f"sqlite:///{self.path}"

    def append(self, session_id: str, item: int) -> Session:
        with self._lock:
            now = self.clock()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT last_click_at, clicks FROM sessions WHERE id = ?",
                                 (session_id,)).fetchone()
                clicks = [] if row is None or self._expired(row[0], now) else _items(row[1])
                clicks.append(item)
                del clicks[:-self.max_clicks]
                db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                           (session_id, now, " ".join(map(str, clicks))))
                if now - self._last_purge >= PURGE_EVERY_S:
                    db.execute("DELETE FROM sessions WHERE last_click_at <= ?",
                               (now - self.ttl_s,))
                    self._last_purge = now
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self._session(session_id, clicks, now)

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute("SELECT last_click_at, clicks FROM sessions WHERE id = ?",
                                   (session_id,)).fetchone()
        if row is None or self._expired(row[0], self.clock()):
            return None
        return self._session(session_id, _items(row[1]), row[0])

    def delete(self, session_id: str) -> bool:
        with self._lock:
            now = self.clock()
            row = self._db.execute("DELETE FROM sessions WHERE id = ? RETURNING last_click_at",
                                   (session_id,)).fetchone()
        return row is not None and not self._expired(row[0], now)

    def count(self) -> int:
        """Sessions held, expired ones not yet purged included."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS: clicks list, last-click time; ARGV: item, now, ttl_s, max_clicks, key expiry ms
_APPEND_LUA = """
local t = redis.call('GET', KEYS[2])
if t and tonumber(t) + tonumber(ARGV[3]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return redis.call('LRANGE', KEYS[1], 0, -1)
"""


class RedisStore(SessionStore):
    """Sessions in Redis: a list of clicks and a last-click time per session, changed by one Lua
    script per click (atomic on the server, so any number of session servers may share it)."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S,
                 max_clicks: int = DEFAULT_MAX_CLICKS, clock: Clock = time.time) -> None:
        super().__init__(ttl_s, max_clicks, clock)
        import redis  # only a Redis store needs the client

        self._url = url
        # a bounded pool: callers beyond POOL_SIZE wait for a connection instead of opening
        # one each (a burst of new connections can be refused by the server's backlog)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=10.0, socket_timeout=10.0,
            socket_connect_timeout=5.0)
        self._redis: Any = redis.Redis(connection_pool=pool)
        self._redis.ping()
        self._append = self._redis.register_script(_APPEND_LUA)

    @property
    def label(self) -> str:
        return safe_label(self._url)

    @staticmethod
    def _keys(session_id: str) -> tuple[str, str]:
        return f"{REDIS_PREFIX}{session_id}:clicks", f"{REDIS_PREFIX}{session_id}:at"

    def append(self, session_id: str, item: int) -> Session:
        now = self.clock()
        expiry_ms = int((self.ttl_s + KEY_SLACK_S) * 1000)
        raw = self._append(keys=list(self._keys(session_id)),
                           args=[item, repr(now), repr(self.ttl_s), self.max_clicks, expiry_ms])
        return self._session(session_id, [int(x) for x in raw], now)

    def get(self, session_id: str) -> Session | None:
        clicks_key, at_key = self._keys(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(at_key)
        pipe.lrange(clicks_key, 0, -1)
        at, raw = pipe.execute()
        if at is None or self._expired(float(at), self.clock()):
            return None
        return self._session(session_id, [int(x) for x in raw], float(at))

    def delete(self, session_id: str) -> bool:
        clicks_key, at_key = self._keys(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(at_key)
        pipe.delete(clicks_key, at_key)
        at, _ = pipe.execute()
        return at is not None and not self._expired(float(at), self.clock())

    def close(self) -> None:
        self._redis.close()


def safe_label(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to print and log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_store(url: str, ttl_s: float = DEFAULT_TTL_S, max_clicks: int = DEFAULT_MAX_CLICKS,
               clock: Clock = time.time) -> SessionStore:
    """The store a URL names: ``sqlite:///PATH`` (a file) or ``redis://HOST:PORT/DB``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"store {url!r}: a SQLite store is sqlite:///PATH, e.g. "
                             "sqlite:///.state/sessions.db")
        return SQLiteStore(path, ttl_s, max_clicks, clock)
    if scheme in ("redis", "rediss", "unix"):
        try:
            return RedisStore(url, ttl_s, max_clicks, clock)
        except Exception as exc:  # redis' errors are not OSErrors; say which store, not its password
            raise ValueError(f"store {safe_label(url)}: cannot be reached: "
                             f"{type(exc).__name__}: {exc}") from None
    raise ValueError(f"store {safe_label(url)!r}: expected sqlite:///PATH or redis://HOST:PORT/DB")
