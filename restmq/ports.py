"""What front ends see of the core: the :class:`Dispatcher` protocol and the :data:`Principal`
type. Front ends are typed against these, never against the engine or the concrete dispatcher."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Union

from twisted.internet import defer

from restmq.auth import Caller
from restmq.latency import Latency
from restmq.streams import Sink, Subscription


class Trusted(enum.Enum):
    """The principal of front ends that cannot authenticate and are trusted by where they listen
    (the syslog receiver: a public one needs --insecure even with an auth file)."""

    TRUSTED = "trusted"


TRUSTED = Trusted.TRUSTED

#: Who is calling: an HTTP :class:`~restmq.auth.Caller`, a token (line, RESP, WebSocket after
#: ``auth``), :data:`TRUSTED`, or None (nobody said).
Principal = Union[Caller, str, Trusted, None]

#: ``authorize(principal, right, queue)`` raises ``unauthorized``/``forbidden``; None allows all.
Authorizer = Callable[[Principal, str, Union[str, None]], None]


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
