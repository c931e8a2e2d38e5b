"""Flow control shared by every stream front end (COMET, SSE, WebSocket, line ``subscribe``).

A stream's sink registers as its socket's push producer. When the client stops reading and the
socket's buffer fills, Twisted pauses it: the sink says it is not ``ready`` and the hub stops handing
it messages (see :class:`restmq.streams.Sink`); when the buffer drains, Twisted resumes it and the
sink wakes its subscription so the hub looks at the queue again.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from restmq.streams import Subscription


class _SinkState(Protocol):
    """What the mixin needs of the sink it is mixed into (the sinks declare these in their
    ``__slots__``)."""

    open: bool
    ready: bool
    subscription: Subscription | None

    def lost(self) -> None: ...


@implementer(IPushProducer)
class ProducerSink:
    """Mixin for a stream sink with ``open``, ``ready`` and ``subscription`` attributes and a
    ``lost()`` method (the client is gone)."""

    __slots__ = ()

    def pauseProducing(self: _SinkState) -> None:
        self.ready = False

    def resumeProducing(self: _SinkState) -> None:
        self.ready = True
        if self.open and self.subscription is not None:
            self.subscription.wake()

    def stopProducing(self) -> None:
        self.lost()

    def lost(self) -> None:  # pragma: no cover - every sink defines it
        raise NotImplementedError
