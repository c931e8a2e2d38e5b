"""What every TCP front end's connection needs whatever its framing: naming the peer, reading
newline-ended lines (line protocol, syslog), and closing without waiting forever on a client that
stopped reading."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from restmq.errors import RestMQError, INTERNAL_MESSAGE

log = Logger()

#: The answer to a failure nobody planned for; the details go to the log, never to the client.
INTERNAL = RestMQError(INTERNAL_MESSAGE)

#: Seconds a closing connection gets to drain what was written before it is aborted.
CLOSE_GRACE = 10.0


def describe_peer(address: IAddress) -> tuple[str, str]:
    """``(host, label)`` of a peer address: host for naming things (``127.0.0.1``), label for logs
    (``127.0.0.1:5000``, ``[::1]:5000``). Non-IP transports (unix sockets) have host ``local``."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str):
        name = getattr(address, "name", None)
        return "local", f"unix:{name.decode(errors='replace') if isinstance(name, bytes) else name}"
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def close_gracefully(transport: Any, clock: IReactorTime, grace: float = CLOSE_GRACE) -> IDelayedCall:
    """Close once what was written has drained; abort after ``grace`` seconds, since a client that
    never reads again (a dropped slow consumer) would otherwise hold the socket forever. Answers
    the abort timer, to cancel when the connection is lost first."""
    transport.loseConnection()
    return clock.callLater(grace, transport.abortConnection)


class NewlineReceiver(LineReceiver):
    """Framing shared by the line protocol and the syslog receiver: lines end in ``\\n``, a trailing
    ``\\r`` is dropped, and connects/disconnects are logged at debug with the peer."""

    delimiter = b"\n"
    #: A TCP/TLS/unix transport: ``disconnecting``, ``getPeer`` and producer methods are used.
    transport: Any
    #: What the logs call this kind of client.
    kind = "line"
    peer_host = "unknown"
    peer = "unknown"

    def connectionMade(self) -> None:
        self.peer_host, self.peer = describe_peer(self.transport.getPeer())
        log.debug("{kind} client connected peer={peer}", kind=self.kind, peer=self.peer)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        log.debug(
            "{kind} client disconnected peer={peer}: {why}",
            kind=self.kind,
            peer=self.peer,
            why=reason.getErrorMessage(),
        )

    def dataReceived(self, data: bytes) -> None:
        """LineReceiver's rules (``paused`` stops between lines, a line over ``MAX_LENGTH`` goes to
        ``lineLengthExceeded``, nothing after a disconnect), but the buffer is split once per read:
        LineReceiver splits it again for every line, copying the rest each time, which made a
        thousand pipelined lines cost a quadratic amount of copying."""
        if self._busyReceiving:
            self._buffer += data
            return
        try:
            self._busyReceiving = True
            self._buffer += data
            while self._buffer and not self.paused:
                *lines, self._buffer = self._buffer.split(b"\n")
                if not lines:
                    if len(self._buffer) >= self.MAX_LENGTH + 1:
                        line, self._buffer = self._buffer, b""
                        self.lineLengthExceeded(line)
                    return
                for i, line in enumerate(lines):
                    if self.paused or len(line) > self.MAX_LENGTH or (self.transport and self.transport.disconnecting):
                        rest = b"\n".join([*lines[i:], self._buffer])
                        if self.paused or (self.transport and self.transport.disconnecting):
                            self._buffer = rest
                        else:
                            self._buffer = b""
                            self.lineLengthExceeded(rest)
                        return
                    self.lineReceived(line)
        finally:
            self._busyReceiving = False

    def lineReceived(self, line: bytes) -> None:
        self.got_line(line[:-1] if line.endswith(b"\r") else line)

    def got_line(self, line: bytes) -> None:
        """One line without its terminator."""
        raise NotImplementedError

    _paused = False

    def set_reading(self, want_pause: bool) -> None:
        """Pause or resume reading the socket (back-pressure on a client that sends too much)."""
        if want_pause and not self._paused:
            self._paused = True
            self.pauseProducing()
        elif not want_pause and self._paused:
            self._paused = False
            self.resumeProducing()


class BufferedReading:
    """Reading control for a protocol whose parser holds what was read (RESP, memcached): pause
    and resume the socket, and on resume hand on the requests already buffered, since no new data
    may ever come to trigger it. ``loop`` hands requests on until the buffer is empty or
    :attr:`paused`; it is never re-entered (a resume from inside it just lets it go on)."""

    def __init__(self, proto: Any, loop: Callable[[], None]) -> None:
        self._proto = proto
        self._loop = loop
        self._looping = False
        #: Reading is paused: the loop must stop handing requests on.
        self.paused = False

    def read(self) -> None:
        if self._looping:
            return
        self._looping = True
        try:
            self._loop()
        finally:
            self._looping = False

    def pause(self, pause: bool) -> None:
        """The pipeline's wish (see :meth:`restmq.frontends.pipeline.Host.reading`)."""
        transport = self._proto.transport
        if transport.disconnecting:
            return
        if pause and not self.paused:
            self.paused = True
            transport.pauseProducing()
        elif not pause and self.paused:
            self.paused = False
            transport.resumeProducing()
            self.read()
