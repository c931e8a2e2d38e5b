"""A result that arrives once and that any number of callers can wait for (the backend's "ready")."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Latch:
    """A result that arrives once and that any number of callers can wait for.

    Unlike a shared Deferred, waiters cannot disturb each other's result, and a failure nobody asked
    about is not reported as "Unhandled error in Deferred".
    """

    def __init__(self) -> None:
        self._fired = False
        self._result: Any = None
        self._waiters: list[Deferred[Any]] = []

    @property
    def fired(self) -> bool:
        return self._fired

    def fire(self, result: Any) -> None:
        """Set the result (a value or a Failure) and wake every waiter; later calls are ignored."""
        if self._fired:
            return
        self._fired, self._result = True, result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def wait(self) -> Deferred[Any]:
        """A new Deferred for the result; cancelling it affects only this caller."""
        if self._fired:
            return (
                defer.fail(self._result)
                if isinstance(self._result, Failure)
                else defer.succeed(self._result)
            )
        d: Deferred[Any] = Deferred(
            lambda d: self._waiters.remove(d) if d in self._waiters else None
        )
        self._waiters.append(d)
        return d
