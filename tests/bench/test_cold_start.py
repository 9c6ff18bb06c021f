"""Cold start on the fake clock: the time to the first successful answer."""

from bench.clock import FakeClock
from bench.cold_start import cold_start
from deployers.base import InvocationError, Prediction


def test_cold_start_is_the_time_to_the_first_success_polling_every_10ms():
    clock = FakeClock()

    def booting(sessions, k=20):
        if clock.now_ns() < 150_000_000:
            raise InvocationError("not ready", status=503)
        return Prediction([[1]], [[1.0]])

    cs = cold_start(booting, [[1]], since_ns=0, timeout_s=2, poll_s=0.01, clock=clock)
    assert cs.seconds == 0.15 and cs.attempts == 16 and cs.last_error == ""


def test_a_target_that_never_answers_has_no_cold_start_and_says_why():
    clock = FakeClock()

    def never(sessions, k=20):
        raise InvocationError("down")

    cs = cold_start(never, [[1]], timeout_s=0.2, poll_s=0.02, clock=clock)
    assert cs.seconds is None and cs.attempts == 10
    assert cs.last_error == "InvocationError: down"
    assert clock.now_ns() == 200_000_000
