"""The stream types front ends and the engine's hub share: a sink, its subscription, a long poll's
watch. Neutral ground: front ends use these without importing the engine."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer


class Sink(Protocol):
    """What a stream front end gives the hub: where messages go, and how the stream ends.

    A sink may also have a ``ready`` attribute: False while its client is not reading (its
    transport paused it). The hub then gives it nothing in roundrobin or reserve mode (messages
    stay queued for others) and, in broadcast, ends its stream after a bound of messages; the
    sink calls ``Subscription.wake()`` when it is ready again.
    """

    def deliver(self, message: dict[str, Any]) -> None: ...

    def close(self, reason: str) -> None: ...


class Subscription(Protocol):
    """A registered sink."""

    queue: str

    def cancel(self) -> None:
        """Remove the sink (its client went away)."""

    def wake(self) -> None:
        """The sink is ready again (its client drained): look at the queue for it."""


class Watch(Protocol):
    """A long poll's interest in one queue's adds."""

    def ready(self, timeout: float) -> defer.Deferred[bool]:
        """Fire True once adds will be noticed, False if that takes over ``timeout`` seconds."""

    def wait(self, timeout: float) -> defer.Deferred[bool]:
        """Fire True on the queue's next add or resume, False after ``timeout`` seconds."""

    def close(self) -> None:
        """The long poll is over."""
