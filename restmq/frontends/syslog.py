"""The syslog receiver (docs/syslog-collectd.md): log lines over TCP become messages.

Each line becomes an ``add`` on queue ``syslogd:<peer host>`` whose value is the JSON text built by
:mod:`restmq.wire.syslog`. Nothing is written back: it is a receiver. A line that cannot be stored
(too large, Redis away) is logged and dropped, and the connection carries on; so is an over-long
line, skipped up to its newline. Blank lines are ignored.

Lines are stored in the order they arrived: while one write to Redis is in flight, the following
lines wait and go together in one ``add_many`` (up to the command table's 1000). If a batch is
refused for one bad line, the batch is retried line by line so only that line is lost. When more
than ``MAX_BACKLOG`` lines wait, the connection stops reading: TCP pushes back on the sender
instead of the server buffering without bound. Lines already received are stored even if the
sender disconnects.
"""

from __future__ import annotations

from collections import deque
from typing import cast

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.commands import MAX_COUNT
from restmq.errors import RestMQError
from restmq.frontends.connection import NewlineReceiver
from restmq.wire import syslog as wire
from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option
from restmq.ports import TRUSTED, Dispatcher

log = Logger()


class SyslogProtocol(NewlineReceiver):
    """One sender's connection: decode lines, queue them, store them in order."""

    kind = "syslog"
    #: Lines waiting for Redis before the connection stops reading.
    MAX_BACKLOG = 10_000

    def __init__(self, dispatcher: Dispatcher, max_line: int, clock: IReactorTime) -> None:
        self.dispatcher = dispatcher
        self.MAX_LENGTH = max_line
        self.clock = clock
        self.host = "unknown"
        self.queue = wire.queue_for(self.host)
        self._backlog: deque[str] = deque()
        self._sending = False
        self._gone = False
        self._discarding = False  # inside an over-long line: drop up to its newline
        self._leftover = b""  # what followed an over-long line, still to be read
        self._receiving = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.host = wire.normalize_host(self.peer_host)
        self.queue = wire.queue_for(self.host)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._gone = True
        super().connectionLost(reason)

    # -- reading ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._receiving:  # re-entered (resumeProducing from inside a line): the outer call reads
            super().dataReceived(data)
            return
        self._receiving = True
        try:
            super().dataReceived(data)
            while self._leftover and not self.paused and not self.transport.disconnecting:
                rest, self._leftover = self._leftover, b""
                super().dataReceived(rest)
        finally:
            self._receiving = False

    def lineLengthExceeded(self, line: bytes) -> None:
        """Skip the over-long line, not the connection: keep whatever followed its newline."""
        if not self._discarding:
            log.warn(
                "syslog line over {limit} bytes dropped peer={peer}", limit=self.MAX_LENGTH, peer=self.peer
            )
        _, newline, rest = line.partition(self.delimiter)
        self._discarding = not newline
        self._leftover = rest

    def got_line(self, line: bytes) -> None:
        if self._discarding:  # the tail of an over-long line
            self._discarding = False
            return
        text = wire.decode_line(line)
        if not text:
            return
        self._backlog.append(wire.encode_record(text, self.host, self.clock.seconds()))
        if not self._sending:
            defer.ensureDeferred(self._pump())
        self._update_reading()

    def _update_reading(self) -> None:
        if self._gone or self.transport.disconnecting:
            return
        self.set_reading(len(self._backlog) >= self.MAX_BACKLOG)

    # -- storing ------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Store waiting lines, one write at a time, batching whatever piled up meanwhile."""
        self._sending = True
        try:
            while self._backlog:
                batch = [self._backlog.popleft() for _ in range(min(len(self._backlog), MAX_COUNT))]
                self._update_reading()
                await self._store(batch)
        finally:
            self._sending = False

    async def _store(self, batch: list[str]) -> None:
        try:
            if len(batch) == 1:
                await self.dispatcher.execute(
                    "add", {"queue": self.queue, "value": batch[0]}, TRUSTED, frontend="syslog"
                )
            else:
                await self.dispatcher.execute(
                    "add_many", {"queue": self.queue, "messages": batch}, TRUSTED, frontend="syslog"
                )
        except RestMQError as e:
            if len(batch) > 1 and e.code != "backend_unavailable":
                for value in batch:  # find the one bad line; keep the others
                    await self._store([value])
                return
            log.warn(
                "syslog lines dropped count={count} queue={queue}: {code}: {error}",
                count=len(batch),
                queue=self.queue,
                code=e.code,
                error=e.message,
            )
        except Exception:
            log.failure("syslog lines dropped count={count} queue={queue}", count=len(batch), queue=self.queue)


class SyslogFactory(protocol.Factory):
    """Builds syslog receiver connections; ``clock`` stamps lines (the reactor unless given)."""

    noisy = False  # the service logs "listening" / "pub/sub connected" itself

    def __init__(
        self, dispatcher: Dispatcher, *, max_line: int = 1 << 20, clock: IReactorTime | None = None
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.dispatcher = dispatcher
        self.max_line = max_line
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> SyslogProtocol:
        proto = SyslogProtocol(self.dispatcher, self.max_line, self.clock)
        proto.factory = self
        return proto


def build(context: Context) -> SyslogFactory:
    """The syslog receiver's listener factory (see restmq/frontends/registry.py)."""
    return SyslogFactory(context.dispatcher, max_line=context.max_message_size, clock=context.reactor)


FRONTEND = FrontEnd(
    "syslog",
    (Option("syslog", None, "Syslog line receiver endpoint (off unless given), e.g. tcp:25000."),),
    build,
    authenticates=False,
)
