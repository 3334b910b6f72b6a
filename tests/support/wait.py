"""Polling until something is true, for every test that waits on a server, a process or a file."""
from __future__ import annotations

import time
from typing import Any, Callable


class WaitTimeout(AssertionError, TimeoutError):
    """The awaited condition never held: a test failure (AssertionError) and a timeout
    (TimeoutError, for the callers that catch it to say more)."""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "the condition", *,
               interval: float = 0.1, retry_on: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    After ``timeout`` s raise ``WaitTimeout`` naming ``what``. An exception of a type in
    ``retry_on`` (say ``OSError`` while a server starts) counts as "not yet" and is named in the
    failure; any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            last_exc = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout} s waiting for {what}"
                      + (f" (last error: {last_exc!r})" if last_exc is not None else ""))
