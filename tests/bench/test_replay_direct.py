"""The replay's baseline sender keeps sessions as the session server does and calls the
deployment's invoker with the session so far."""

from __future__ import annotations

from bench.replay_direct import DirectSender
from deployers.base import InvocationError, Prediction


def test_each_click_sends_the_newest_max_clicks_of_its_session() -> None:
    seen: list[list[int]] = []

    def invoker(sessions: list[list[int]], k: int = 20) -> Prediction:
        seen.append(sessions[0])
        return Prediction(items=[[s * 10 for s in sessions[0]][:k]], scores=[[0.0]])

    sender = DirectSender(invoker, max_clicks=2)
    first = sender.click("a", 1, 5)
    sender.click("b", 9, 5)
    sender.click("a", 2, 5)
    third = sender.click("a", 3, 5)
    assert seen == [[1], [9], [1, 2], [2, 3]]
    assert first.ok and first.items == (10,) and third.clicks == (2, 3)
    assert third.timing["endpoint"] >= 0
    assert sender.delete("a") == 204 and sender.delete("a") == 404


def test_a_failed_call_is_an_answer_with_the_status_not_an_exception() -> None:
    def invoker(sessions: list[list[int]], k: int = 20) -> Prediction:
        raise InvocationError("POST /invocations answered 503: busy", 503, "busy")

    answer = DirectSender(invoker).click("a", 1, 20)
    assert answer.status == 503 and not answer.ok and "503" in answer.error
