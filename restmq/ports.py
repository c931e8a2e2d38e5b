"""What front ends see of the core: the :class:`Dispatcher` protocol and the :data:`Principal`
type. Front ends are typed against these, never against the engine or the concrete dispatcher.
(``Principal``, ``TRUSTED`` and ``Authorizer`` are defined with the tokens in :mod:`restmq.auth`,
which judges principals and cannot import this module.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import defer

from restmq.auth import TRUSTED, Authorizer, Caller, Principal, Trusted
from restmq.latency import Latency
from restmq.streams import Sink, Subscription

__all__ = ["TRUSTED", "Authorizer", "Caller", "Dispatcher", "Principal", "Trusted"]


class Dispatcher(Protocol):
    """The one door to the queues (implemented by :class:`restmq.dispatch.Dispatcher`)."""

    max_message_size: int
    calls: Counter[str]
    errors: Counter[str]
    latency: Latency
    #: The access check in force (None: everyone may do everything); the health probe asks it.
    authorize: Authorizer | None

    @property
    def redis_latency(self) -> Latency: ...

    def execute(
        self, name: str, args: Mapping[str, Any], principal: Principal = None, *, frontend: str = "other"
    ) -> defer.Deferred[Any]:
        """Run command ``name``; fires with its JSON-able answer or a RestMQError."""

    def execute_run(
        self, calls: Sequence[tuple[str, Mapping[str, Any]]], principal: Principal = None, *, frontend: str = "other"
    ) -> defer.Deferred[list[Any]]:
        """Run consecutive commands in order, runs of one kind on one queue as one script each;
        fires with each one's answer or Failure (see restmq/coalesce.py)."""

    def authenticate(self, token: str) -> None:
        """Check a token up front (``auth TOKEN``); raises ``unauthorized`` when unknown."""

    def subscribe(
        self,
        queue: str,
        sink: Sink,
        *,
        mode: str = "take",
        lease: Any = None,
        since: Any = None,
        principal: Principal = None,
    ) -> Subscription:
        """Register a stream sink for ``queue``."""
