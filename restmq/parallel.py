"""Deferreds run together, failing as the first of them failed.

``gatherResults`` wraps the first failure in ``FirstError``; callers want the failure itself (a
``RestMQError`` keeps its code), so this unwraps it once, here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


def _first(failure: Failure) -> Failure:
    error = failure.value
    if isinstance(error, defer.FirstError):
        sub: Failure = error.subFailure
        return sub
    return failure


def gather(deferreds: Iterable[defer.Deferred[T]]) -> defer.Deferred[list[T]]:
    """The results of ``deferreds`` in order, or the first failure (unwrapped) once any fails."""
    return defer.gatherResults(list(deferreds), consumeErrors=True).addErrback(_first)
