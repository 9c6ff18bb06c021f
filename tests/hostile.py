"""A hostile corpus of scoring requests: content types, methods, sizes, encodings, nesting,
amplification, contract breaches and seeded fuzz; and a sender that reports what came back.

Every ``Case`` says what a sound data plane answers: ``"4xx"`` (refused, with a message that names
what was wrong) or ``"any"`` (fuzz that may happen to be valid: 200 or 4xx, never 5xx). ``body``
cases (``http_only`` False) are sent alike to the HTTP data plane and to the Lambda handler.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = "application/json"
SIX_MB = 6 * 1024 * 1024
Expect = Literal["4xx", "any", "2xx"]


@dataclass(frozen=True)
class Case:
    """One request: what is sent and what a sound server answers."""

    name: str
    body: bytes
    expect: Expect = "4xx"
    method: str = "POST"
    path: str = "/invocations"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON})
    http_only: bool = False  # a transport rule (type, method, path): not a Lambda body


@dataclass(frozen=True)
class Answer:
    """What came back: ``status`` None when the connection was dropped."""

    status: int | None
    body: bytes
    error: str = ""


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def good_body(ids: list[int], k: int = 20) -> dict[str, Any]:
    return {"dataframe_records": [{"session": ids}], "params": {"k": k}}


def _types(good: bytes) -> list[Case]:
    refused = ["text/plain", "text/json", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x", "application/octet-stream", "text/csv",
               "application/jsonl", "application/json-seq", "application/x-json",
               "application/vnd.apache.parquet", "application/jsonx", "image/png", "*/*",
               "application", "json", "application/xml", "application/json, text/plain",
               "text/html; charset=utf-8", "application/json; charset=latin-1",
               "application/json; charset=utf-16"]
    cases = [Case(f"content type {t!r}", good, headers={"Content-Type": t}, http_only=True)
             for t in refused]
    cases.append(Case("no content type", good, headers={}, http_only=True))
    cases.append(Case("empty content type", good, headers={"Content-Type": ""}, http_only=True))
    for t in ("APPLICATION/JSON", "application/json; charset=utf-8",
              "Application/Json; Charset=UTF-8"):
        cases.append(Case(f"accepted content type {t!r}", good, expect="2xx",
                          headers={"Content-Type": t}, http_only=True))
    return cases


def _methods(good: bytes) -> list[Case]:
    cases = [Case(f"method {m}", good if m in ("PUT", "PATCH") else b"", method=m,
                  http_only=True) for m in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS")]
    for path in ("/", "/admin", "/invocations/x", "/../../etc/passwd", "/version/../invocations2",
                 "/%2e%2e/%2e%2e/etc/passwd", "/metrics", "/docs", "/openapi.json",
                 "/" + "a" * 3000):
        cases.append(Case(f"path {path[:30]!r}", good, path=path, http_only=True))
    return cases


def _sizes(vocab: list[int]) -> list[Case]:
    big_ids = ",".join(["1"] * (SIX_MB // 2 + 10))
    cases = [
        Case("body over 6 MB", ('{"dataframe_records":[{"session":[' + big_ids + "]}]}").encode(),
             http_only=True),
        Case("6 MB of spaces", b" " * (SIX_MB + 1), http_only=True),
        Case("empty body", b""),
        Case("10,000 empty sessions, k=1000",
             _dumps({"dataframe_records": [{"session": []}] * 10_000, "params": {"k": 1000}})),
        Case("5,000 sessions of one id, k=1000",
             _dumps({"dataframe_records": [{"session": [vocab[0]]}] * 5_000,
                     "params": {"k": 1000}})),
        Case("session of 1,001 ids", _dumps(good_body([vocab[0]] * 1_001))),
        Case("session of 100,000 ids", _dumps(good_body([vocab[0]] * 100_000))),
        Case("10,001 sessions", _dumps({"dataframe_records": [{"session": [1]}] * 10_001})),
        Case("header of 64 KB", _dumps(good_body(vocab[:3])),
             headers={"Content-Type": JSON, "X-Pad": "a" * 65_536}, http_only=True),
        Case("many headers", _dumps(good_body(vocab[:3])),
             headers={"Content-Type": JSON, **{f"X-H{i}": "v" * 200 for i in range(300)}},
             http_only=True),
    ]
    return cases


def _encodings(good: bytes) -> list[Case]:
    cases = [
        Case("invalid UTF-8 byte", good[:10] + b"\xff" + good[10:]),
        Case("lone continuation byte", b'{"dataframe_records": [{"session": [1]}], "x": "\x80"}'),
        Case("overlong UTF-8 slash", b'{"dataframe_records": [{"session": [1]}], "x": "\xc0\xaf"}'),
        Case("UTF-16 body", good.decode().encode("utf-16")),
        Case("UTF-32 body", good.decode().encode("utf-32")),
        Case("latin-1 string value", '{"dataframe_records": [{"session": [1]}], "é": 1}'
             .encode("latin-1")),
        Case("NUL bytes", b"\x00" * 64),
        Case("NUL inside JSON", good[:5] + b"\x00" + good[5:]),
        Case("lone surrogate escape as id",
             b'{"dataframe_records": [{"session": ["\\ud800"]}]}'),
        Case("unicode digits as id", '{"dataframe_records": [{"session": [١٢٣]}]}'.encode()),
        Case("BOM then JSON", b"\xef\xbb\xbf" + good, expect="any"),
        Case("truncated JSON", good[: len(good) // 2]),
        Case("trailing garbage", good + b"}}}"),
        Case("two JSON documents", good + b" " + good),
        Case("not JSON: text", b"hello"),
        Case("not JSON: CSV", b"session\n1 2 3\n"),
        Case("JSON string", b'"dataframe_records"'),
        Case("JSON number", b"42"),
        Case("JSON null", b"null"),
        Case("JSON array", b"[1, 2, 3]"),
        Case("NaN literal as id", b'{"dataframe_records": [{"session": [NaN]}]}'),
        Case("Infinity as k", b'{"dataframe_records": [{"session": [1]}], "params": {"k": Infinity}}'),
        Case("single quotes", b"{'dataframe_records': [{'session': [1]}]}"),
        Case("comment in JSON", b'{"dataframe_records": [{"session": [1]}] /* x */}'),
        Case("base64 of JSON", __import__("base64").b64encode(good)),
    ]
    return cases


def _nesting() -> list[Case]:
    cases = []
    for depth in (8, 64, 1_000, 10_000, 100_000):
        cases.append(Case(f"list nesting {depth}", b"[" * depth + b"]" * depth))
        cases.append(Case(f"object nesting {depth}", b'{"a":' * depth + b"1" + b"}" * depth))
        cases.append(Case(f"nesting {depth} inside a session",
                          b'{"dataframe_records": [{"session": [' + b"[" * depth + b"1"
                          + b"]" * depth + b"]}]}"))
        cases.append(Case(f"nesting {depth} inside params",
                          b'{"dataframe_records": [{"session": [1]}], "params": {"k": '
                          + b"[" * depth + b"1" + b"]" * depth + b"}}"))
    return cases


def _contract(vocab: list[int]) -> list[Case]:
    a = vocab[0]
    bad_sessions: list[tuple[str, Any]] = [
        ("bool id", [True]), ("float id", [1.0]), ("float id with fraction", [1.5]),
        ("string id", ["1"]), ("null id", [None]), ("negative id", [-1]), ("zero id", [0]),
        ("id 2**63", [2**63]), ("id 2**64", [2**64]), ("list id", [[a]]), ("object id", [{"a": 1}]),
        ("session string", "1 2 3"), ("session number", 5), ("session null", None),
        ("session object", {"0": a}), ("exponent id", [1e3]),
    ]
    cases = [Case(name, _dumps(good_body(s))) for name, s in bad_sessions]
    cases += [Case("5,000-digit id", ('{"dataframe_records":[{"session":[' + "9" * 5_000
                                      + "]}]}").encode()),
              Case("100,000-digit id", ('{"dataframe_records":[{"session":[' + "9" * 100_000
                                        + "]}]}").encode()),
              Case("5,000-digit k", ('{"dataframe_records":[{"session":[1]}],"params":{"k":'
                                     + "9" * 5_000 + "}}").encode())]
    for name, k in (("k 0", 0), ("k -1", -1), ("k 1001", 1001), ("k float", 2.5), ("k 20.0", 20.0),
                    ("k string", "20"), ("k bool", True), ("k list", [20]), ("k huge", 10**30)):
        cases.append(Case(name, _dumps({"dataframe_records": [{"session": [a]}],
                                        "params": {"k": k}})))
    bodies: list[tuple[str, Any]] = [
        ("empty object", {}), ("no sessions", {"dataframe_records": []}),
        ("records not a list", {"dataframe_records": {"session": [a]}}),
        ("record not an object", {"dataframe_records": [[a]]}),
        ("record without session", {"dataframe_records": [{"items": [a]}]}),
        ("both forms", {"dataframe_records": [{"session": [a]}],
                        "dataframe_split": {"columns": ["session"], "data": [[[a]]]}}),
        ("split without columns", {"dataframe_split": {"data": [[[a]]]}}),
        ("split without session column", {"dataframe_split": {"columns": ["x"], "data": [[[a]]]}}),
        ("split duplicate session columns", {"dataframe_split": {"columns": ["session", "session"],
                                                                 "data": [[[a], [a]]]}}),
        ("split index length differs", {"dataframe_split": {"columns": ["session"], "index": [0, 1],
                                                            "data": [[[a]]]}}),
        ("split row too short", {"dataframe_split": {"columns": ["x", "session"], "data": [[1]]}}),
        ("split data not a list", {"dataframe_split": {"columns": ["session"], "data": "x"}}),
        ("split empty data", {"dataframe_split": {"columns": ["session"], "data": []}}),
        ("instances form", {"instances": [[a]]}), ("inputs form", {"inputs": {"session": [[a]]}}),
        ("params not an object", {"dataframe_records": [{"session": [a]}], "params": [20]}),
        ("unknown params key", {"dataframe_records": [{"session": [a]}], "params": {"kk": 5}}),
        ("unknown params key next to k", {"dataframe_records": [{"session": [a]}],
                                          "params": {"k": 5, "explain": True}}),
        ("unknown top-level key", {"dataframe_records": [{"session": [a]}], "extra": 1}),
    ]
    cases += [Case(name, _dumps(body)) for name, body in bodies]
    # null stands for absent (the contract's default k), as documented
    cases += [Case("k null", _dumps({"dataframe_records": [{"session": [a]}],
                                     "params": {"k": None}}), expect="2xx"),
              Case("params null", _dumps({"dataframe_records": [{"session": [a]}],
                                          "params": None}), expect="2xx")]
    return cases


def _fuzz(good: bytes, vocab: list[int], n: int, seed: int) -> list[Case]:
    """Seeded mutations of a good body: byte flips, cuts, inserts, and random JSON values
    in the places of the session, the ids and k."""
    rng = random.Random(seed)
    atoms: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [[]], 2**70, "9" * 50,
                        vocab[0], [vocab[0]], {"session": []}, "\u202e", 1e308]
    cases = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            body = bytes(data)
        elif kind == 1:
            cut = rng.randrange(len(good))
            body = good[:cut] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))) \
                + good[cut + rng.randint(0, 4):]
        elif kind == 2:
            ids = [rng.choice([*vocab[:5], *atoms]) for _ in range(rng.randint(0, 6))]
            body = _dumps({"dataframe_records": [{"session": ids}],
                           "params": {"k": rng.choice([1, 20, *atoms])}})
        else:
            body = _dumps({rng.choice(["dataframe_records", "dataframe_split", "x"]):
                           rng.choice(atoms), "params": rng.choice([{}, {"k": 3}, *atoms])})
        cases.append(Case(f"fuzz {i}", body, expect="any"))
    return cases


def corpus(vocab: list[int], fuzz: int = 200, seed: int = 0) -> list[Case]:
    """The whole corpus over a model whose known raw ids are ``vocab``."""
    good = _dumps(good_body(vocab[:3]))
    return [*_types(good), *_methods(good), *_sizes(vocab), *_encodings(good), *_nesting(),
            *_contract(vocab), *_fuzz(good, vocab, fuzz, seed)]


def send(host: str, port: int, case: Case, timeout: float = 60.0) -> Answer:
    """Send ``case`` on a new connection; a dropped connection is an ``Answer`` with no status."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        for key, value in case.headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders()
        # a server may answer (413) before reading everything: read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(case.body)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read())
    except (http.client.HTTPException, OSError) as exc:
        return Answer(None, b"", f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def message_of(body: bytes) -> str:
    """The error message of a JSON error body ('' when there is none)."""
    try:
        value = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(value, dict):
        return ""
    text = value.get("message") or value.get("error") or ""
    return text if isinstance(text, str) else ""


def problems(case: Case, answer: Answer, max_error_bytes: int = 4096) -> list[str]:
    """What is wrong with ``answer`` to ``case`` (empty when it is sound)."""
    if answer.status is None:
        return [f"{case.name}: connection dropped ({answer.error})"]
    out = []
    if answer.status >= 500:
        out.append(f"{case.name}: {answer.status} {answer.body[:200]!r}")
    if case.expect == "4xx" and not 400 <= answer.status < 500:
        out.append(f"{case.name}: expected a 4xx, got {answer.status} {answer.body[:120]!r}")
    if case.expect == "2xx" and answer.status != 200:
        out.append(f"{case.name}: expected 200, got {answer.status} {answer.body[:200]!r}")
    if 400 <= answer.status < 500:
        if not message_of(answer.body):
            out.append(f"{case.name}: {answer.status} without a message: {answer.body[:200]!r}")
        if len(answer.body) > max_error_bytes or b"stack_trace" in answer.body \
                or b"Traceback" in answer.body:
            out.append(f"{case.name}: error body of {len(answer.body)} bytes "
                       f"{answer.body[:120]!r}...")
    return out
