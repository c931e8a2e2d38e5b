"""One command to a Redis unix socket without txredisapi (no pool, no reconnecting): how the
embedded server's supervisor pings the server it started and asks an orphan to shut down."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class _OneCommand(Protocol):
    """Send one inline command, collect the first reply line (None if the server just closes)."""

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.reply: Deferred[bytes | None] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None  # makeConnection sets it before calling this
        self.transport.write(self.command + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.reply.called:
            self.reply.callback(self._buffer.split(b"\r\n", 1)[0])
            assert self.transport is not None  # data arrives only on a connected protocol
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.reply.called:
            self.reply.callback(None)


class _QuietFactory(Factory):
    """Hands out one protocol without logging "Starting factory" for every PING poll."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        self._protocol.factory = self
        return self._protocol


async def send_command(
    reactor: Any, path: str, command: bytes, timeout: float = 1.0
) -> bytes | None:
    """Send one command over a unix socket without txredisapi (no pool, no reconnecting)."""
    from twisted.internet.endpoints import UNIXClientEndpoint

    proto = _OneCommand(command)
    await UNIXClientEndpoint(reactor, path, timeout=timeout).connect(_QuietFactory(proto))
    try:
        return await proto.reply.addTimeout(timeout, reactor)
    finally:
        if proto.transport is not None:
            proto.transport.loseConnection()
