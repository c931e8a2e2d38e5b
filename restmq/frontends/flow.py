"""Flow control shared by every stream front end (COMET, SSE, WebSocket, line ``subscribe``).

A stream's sink registers as its socket's push producer. When the client stops reading and the
socket's buffer fills, Twisted pauses it: the sink says it is not ``ready`` and the hub stops handing
it messages (see :class:`restmq.streams.Sink`); when the buffer drains, Twisted resumes it and the
sink wakes its subscription so the hub looks at the queue again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class ProducerSink:
    """Mixin for a stream sink with ``open``, ``ready`` and ``subscription`` attributes and a
    ``lost()`` method (the client is gone)."""

    __slots__ = ()
    open: bool
    ready: bool
    subscription: Any

    def pauseProducing(self) -> None:
        self.ready = False

    def resumeProducing(self) -> None:
        self.ready = True
        if self.open and self.subscription is not None:
            self.subscription.wake()

    def stopProducing(self) -> None:
        self.lost()

    def lost(self) -> None:  # pragma: no cover - every sink defines it
        raise NotImplementedError
