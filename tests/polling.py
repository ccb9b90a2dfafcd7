"""Waiting for something in a test: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll[T](
    check: Callable[[], T | bool | None],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call `check` until it returns something truthy, and return that.

    Fails with `what` and the last answer once `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; "
                f"last answer: {answer!r}"
            )
        time.sleep(interval)
