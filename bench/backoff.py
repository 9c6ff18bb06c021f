"""How long a closed-loop user pauses after a request that found no connection.

A request that fails at the connection level (``InvocationError.connection``: refused, reset,
DNS, a timeout to connect) comes back in microseconds, so a user that sent again at once would
spin: against a dead server one level recorded ~60,000 failures in 3 s, and the generator's CPU,
not the target, was then what the level measured. ``Backoff`` says how long to pause instead:
``FIRST_S`` after the first such failure, doubling after each one in a row up to ``CAP_S``; the
next request that gets an answer (a success, or any HTTP status) starts it again from nothing.
An answer with an error status never pauses: a 4xx/5xx comes from a server that is there.
"""

from __future__ import annotations

FIRST_S = 0.010
"""Pause after the first connection failure in a row (seconds)."""

CAP_S = 1.0
"""Longest pause: once reached, a user tries a dead server about once a second."""


class Backoff:
    """One user's pause after connection failures; not shared between threads."""

    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError(f"need 0 < first_s <= cap_s, got first_s={first_s!r}, "
                             f"cap_s={cap_s!r}")
        self.first_s, self.cap_s = first_s, cap_s
        self.pause_s = 0.0

    def after(self, connection_failed: bool) -> float:
        """Seconds to pause before the next request, given how the last one ended."""
        if not connection_failed:
            self.pause_s = 0.0
        elif self.pause_s == 0.0:
            self.pause_s = self.first_s
        else:
            self.pause_s = min(self.cap_s, 2 * self.pause_s)
        return self.pause_s
