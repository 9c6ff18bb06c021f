"""Facts that ``niser`` (inside the scoring server) and ``deployers`` (the nginx front door in
front of it) each hold, because neither package may import the other: they must agree."""

from __future__ import annotations

import re

import pytest

from deployers import frontdoor
from niser import serving_guard

CONTENT_TYPES = [
    "application/json", "APPLICATION/JSON", "application/json; charset=utf-8",
    "application/json;charset=UTF-8", 'application/json; charset="utf-8"', " application/json ",
    "\tapplication/json\t", "application/json ; charset = utf-8 ", "text/plain",
    "application/jsonx", "application/json; charset=latin-1", "application/json;",
    "application/json\n", "multipart/form-data", "", "application/x-www-form-urlencoded",
    "application/json, text/plain", "application/json; charset=utf-8; x=1",
]


def _nginx_rule() -> re.Pattern[str]:
    """The front door's map pattern as nginx reads it: ``~*`` is a case-insensitive PCRE."""
    rule = frontdoor._JSON_TYPE
    assert rule.startswith("~*")
    return re.compile(rule[2:], re.I)


@pytest.mark.parametrize("value", CONTENT_TYPES)
def test_the_front_door_and_the_scoring_guard_accept_the_same_content_types(value: str) -> None:
    by_door = _nginx_rule().search(value) is not None
    by_guard = serving_guard.content_type_problem(value) is None
    assert by_door == by_guard, value


def test_both_accept_the_plain_type_and_refuse_a_missing_one() -> None:
    assert serving_guard.content_type_problem(frontdoor.ACCEPTED_TYPE) is None
    assert serving_guard.ACCEPTED_TYPE == frontdoor.ACCEPTED_TYPE
    assert serving_guard.content_type_problem(None) is not None


def test_both_bound_error_bodies_alike() -> None:
    assert serving_guard.MAX_ERROR_BYTES == frontdoor.MAX_ERROR_BYTES
